# pyright: strict, reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false, reportUnknownLambdaType=false
# pyright: reportMissingTypeStubs=false
"""Pure JAX training pieces: the state, the losses, the per-replica train and eval steps.

Each step is written for one replica (m examples) with collectives over
`replicas.REPLICA_AXES`; `replicas.map_replicas` turns it into one program over
devices and virtual replicas. No TensorFlow, no I/O: the loop (`loop.py`) feeds them.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from sam_jax import optim, replicas
from sam_jax.losses import cross_entropy, error_rate
from sam_jax.models.layers import train_rngs
from sam_jax.passes import gradient_passes
from sam_jax.sam import perturbed_aux

# (params, opt_state) -> the parameters to evaluate (and average in the EMA).
EvaluatedParams = Callable[[Any, Any], Any]


class TrainState(struct.PyTreeNode):
  """Everything a training run carries from step to step (identical on all replicas)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any  # {"params", "batch_stats"} averaged with config.ema_decay, or {} when off


def init_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                     image_shape: tuple[int, ...], ema: bool = False,
                     init_from: Callable[[Any], Any] | None = None) -> TrainState:
  """Initialises parameters (float32), BatchNorm statistics, optimizer state and EMA.

  Both halves are compiled (one program each, not one per operation: seconds instead of
  minutes for large models). `init_from` maps the fresh variables to the ones to start
  from (pretrained weights), between the two.
  """
  images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  variables = jax.jit(lambda rng: model.init(rng, images, train=False))(rng)
  if init_from is not None:
    variables = init_from(variables)

  @jax.jit
  def state_from(variables: Mapping[str, Any]) -> TrainState:
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    # The EMA starts as a copy: the step donates the state, and a buffer is donated once.
    averages = jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats})
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=tx.init(params), ema=averages if ema else {})

  return state_from(variables)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformationExtraArgs, l2_weight_decay: float = 0.0,
               no_weight_decay_on_bn: bool = False, decay_kernels_only: bool = False,
               label_smoothing: float = 0.0, loss: str = "softmax", ema_decay: float = 0.0,
               ema_warmup_steps: int = 0, redraw_masks: bool = False, replica_mapping: str = "loop",
               true_gradient_ascent: bool = False, skip_nonfinite: bool = False,
               evaluated_params: EvaluatedParams | None = None, clean_gradient: bool = True,
               sam_step: bool | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SAM step for one replica; call it through `replicas.map_replicas`.

  1. g = grad of this replica's loss (cross-entropy + optional 0.5 wd ||w||^2).
  2. `tx` (see `optim.create_optimizer`) perturbs w by eps(g), evaluates the same loss
     with the same dropout/shake randomness at w + eps, averages that gradient over all
     replicas, clips it and updates w (not w + eps). `tx.update` gets `grad_fn(p,
     examples=None, functional=False)` (functional: Functional-SAM's gradient) and, for
     ESAM's data selection, `example_losses` and `example_losses_fn(p)`; a variant of the
     SAM family (`family`) uses what it needs.
  3. BatchNorm running statistics come from the clean pass only, averaged over the
     replicas (EMAs are linear, so this equals averaging them at evaluation time).

  Args:
    state: the replicated training state.
    batch: {"image": [m, H, W, C], "label": [m] or soft [m, classes]} for this replica.
    rng: the run's base key; folded with the step and the replica index.
    model, tx: the Flax model and the optimizer chain.
    l2_weight_decay: wd of the in-loss weight decay (0 when decay is decoupled).
    no_weight_decay_on_bn, decay_kernels_only: which parameters the in-loss decay
      covers (`optim.weight_decay_mask`).
    label_smoothing: smoothing of the one-hot targets.
    loss: "softmax" or "sigmoid" cross-entropy (`losses.cross_entropy`).
    ema_decay, ema_warmup_steps: the EMA of params and BatchNorm statistics (state.ema)
      follows `optim.ema_decay`: a copy of the weights until the warmup ends, then an
      average whose decay grows to `ema_decay`.
    redraw_masks: new dropout / ShakeDrop / stochastic-depth masks in the SAM pass, the
      shake coefficients shared (`models.layers.train_rngs`); the original's behaviour.
    replica_mapping: how the gradient passes run over the virtual replicas
      (`replicas.one_replica_at_a_time`): "loop" (unrolled, fast on CPU), "scan" (one
      after another: gradient accumulation, one replica's activations in memory) or
      "vmap" (needed when the model synchronises BatchNorm across replicas).
    true_gradient_ascent: take the clean (ascent) gradient of a shake model with the same
      gates forward and backward (`true_gradient=True`), so the perturbation follows the
      gradient of the function actually computed, as the original code did; the update
      gradient at w + eps keeps the shake gradient. Only meaningful with SAM on.
    skip_nonfinite: a step whose loss, gradient or update is NaN/Inf leaves the state
      as it was (parameters, statistics, optimizer and EMA; the step still counts), as
      `optax.apply_if_finite` does.
    evaluated_params: (params, opt_state) -> the parameters the EMA averages, those
      evaluated (the variant's, `family.registry`); None: the params themselves.
    clean_gradient: False for a variant whose update ignores the clean gradient and calls
      `grad_fn` on the whole batch instead (bSAM, SAMPa; `family.registry`): there is no
      clean pass (and no `clean_grad_norm`), `tx.update` gets None, and `loss`, `error`
      and the BatchNorm statistics are those of the last such `grad_fn` pass (bSAM: at
      w + rho g / s, whose statistics the authors keep too; SAMPa: each replica's point).
    sam_step: for the variants that run the second pass on some steps only (SAM every
      k, randomized SAM, LookSAM): True or False decides it at trace time (one program
      of each kind, `make_train_step`); None leaves it to the variant's `lax.cond`.

  Returns:
    The new state and metrics averaged over replicas: `loss` and `error` at w (the
    data loss, with label smoothing), `perturbed_loss` and `perturbed_error` at w + eps
    (what the original logged as train_loss / train_error_rate, Appendix C.4's curves;
    present when SAM is on), `clean_grad_norm` (||g|| at w) and `grad_norm` (the
    gradient the optimizer used: after the cross-replica mean and clipping, the
    original's gradient_norm; present when `tx` records it, see `optim`), and
    `nonfinite` (1.0 when the loss, the gradient or the update had a NaN/Inf, else 0.0).
  """
  rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), replicas.replica_index())
  decay_mask = optim.weight_decay_mask(state.params, no_weight_decay_on_bn, decay_kernels_only)

  clean_pass, sam_pass, losses_pass, functional_pass = gradient_passes(
      model, label_smoothing, l2_weight_decay, decay_mask, replica_mapping,
      model.clone(true_gradient=True) if true_gradient_ascent else model, loss)
  # (per-example losses, logits, BatchNorm statistics) of the pass the metrics and statistics
  # come from: the clean one, or without it the last of grad_fn on the whole batch.
  measured: list[tuple[jax.Array, jax.Array, Any]] = []
  grads: Any = None  # None for a variant that takes no clean gradient
  if clean_gradient:
    (_, outputs), grads = clean_pass(state.params, state.batch_stats, batch, train_rngs(rng))
    measured.append(outputs)
  keeps_perturbed = perturbed_aux(state.opt_state) is not None

  def grad_fn(params: optax.Params, examples: jax.Array | None = None,
              functional: bool = False) -> optax.Updates | tuple[optax.Updates, Any]:
    """The gradient at `params`, on `examples` (indices) of the batch or all of it; its
    functional part (`family.functional_sam`) with `functional`."""
    chosen = batch if examples is None else jax.tree.map(lambda x: x[examples], batch)
    rngs = train_rngs(rng, redraw_masks)
    if functional and examples is not None:
      raise ValueError("Functional-SAM's gradient is of the whole batch: pass examples=None.")
    if functional:
      grads, outputs = functional_pass(params, state.batch_stats, batch, rngs, measured[0][1])
    else:
      grads, outputs = sam_pass(params, state.batch_stats, chosen, rngs)
    losses, logits, _ = outputs
    if examples is None and not clean_gradient:
      measured.append(outputs)  # traced within this step: read after tx.update
    if not keeps_perturbed:
      return grads
    perturbed = {"loss": jnp.mean(losses), "error": error_rate(logits, chosen["label"])}
    return grads, jax.lax.pmean(perturbed, replicas.REPLICA_AXES)  # the same on every replica

  def example_losses_fn(params: optax.Params) -> jax.Array:
    return losses_pass(params, state.batch_stats, batch, train_rngs(rng, redraw_masks))

  updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn,
                                 example_losses=measured[0][0] if measured else None,
                                 example_losses_fn=example_losses_fn, sam_step=sam_step)
  params = optax.apply_updates(state.params, updates)
  metrics = step_metrics(measured[-1], batch["label"], grads, opt_state)
  batch_stats, metrics = jax.lax.pmean((measured[-1][2], metrics), replicas.REPLICA_AXES)
  checked = [metrics["loss"], metrics.get("clean_grad_norm", 0.0), *jax.tree.leaves(updates)]
  finite = jnp.stack([jnp.isfinite(x).all() for x in checked]).all()
  metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  new_state = new_state.replace(
      ema=updated_ema(new_state, ema_decay, ema_warmup_steps, evaluated_params))
  if skip_nonfinite:
    kept = state.replace(step=new_state.step)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, kept)
  return new_state, metrics


def step_metrics(measured: tuple[jax.Array, jax.Array, Any], labels: jax.Array, grads: Any,
                 opt_state: Any) -> dict[str, jax.Array]:
  """This replica's metrics (`train_step`): from the measured pass's (per-example losses,
  logits, _), the clean gradient (None: none) and the aux and norm the optimizer kept."""
  example_losses, logits, _ = measured
  metrics = {"loss": jnp.mean(example_losses), "error": error_rate(logits, labels)}
  if grads is not None:
    metrics["clean_grad_norm"] = optax.tree_utils.tree_norm(grads)
  perturbed = perturbed_aux(opt_state)
  if perturbed is not None:
    metrics.update(perturbed_loss=perturbed["loss"], perturbed_error=perturbed["error"])
  update_norm = optim.update_norm(opt_state)
  if update_norm is not None:
    metrics["grad_norm"] = update_norm
  return metrics


def updated_ema(state: TrainState, decay: float, warmup_steps: int,
                evaluated_params: EvaluatedParams | None = None) -> Any:
  """state.ema moved towards the new evaluated params and BatchNorm statistics, with the
  decay of `optim.ema_decay`; {} when there is no EMA."""
  if not state.ema:
    return state.ema
  rate = optim.ema_decay(state.step, decay, warmup_steps)
  params = state.params if evaluated_params is None else evaluated_params(
      state.params, state.opt_state)
  new = {"params": params, "batch_stats": state.batch_stats}
  return jax.tree.map(lambda old, new: rate * old + (1.0 - rate) * new, state.ema, new)


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, model: nn.Module,
              label_smoothing: float = 0.0, loss: str = "softmax") -> dict[str, jax.Array]:
  """Sums of loss, errors and examples over all replicas; padded examples have mask 0.

  With label smoothing, `smoothed_loss` is the loss with the run's smoothing too (the
  original's evaluation loss, flax_training.py:631-634); `loss` is the plain one. Both
  are of the run's `loss` kind (`losses.cross_entropy`).
  """
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  # Not mutable: flax's apply returns the output alone, not (output, mutated variables).
  logits = cast(jax.Array, model.apply(variables, batch["image"], train=False))
  mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  sums = {
      "loss": jnp.sum(cross_entropy(logits, batch["label"], kind=loss) * mask),
      "error": jnp.sum((jnp.argmax(logits, -1) != batch["label"]) * mask),
      "top5_error": jnp.sum(jnp.all(top5 != batch["label"][:, None], axis=-1) * mask),
      "count": jnp.sum(mask),
  }
  if label_smoothing:
    sums["smoothed_loss"] = jnp.sum(
        cross_entropy(logits, batch["label"], label_smoothing, loss) * mask)
  return jax.lax.psum(sums, replicas.REPLICA_AXES)


class GlobalTrainStep(Protocol):
  """`make_train_step`'s step, and `program(sam_step)`: its jitted program of one kind."""
  program: Callable[..., Callable[..., Any]]

  def __call__(self, state: TrainState, batch: Any, rng: jax.Array,
               sam_step: bool | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
    ...


def make_train_step(model: nn.Module, tx: optax.GradientTransformationExtraArgs, mesh: Mesh,
                    layout: replicas.Layout, **loss_kwargs: Any) -> GlobalTrainStep:
  """The global train step: (state, global batch, rng, sam_step=None) -> (state, metrics).

  One jitted program per value of `sam_step` (see `train_step`), compiled at first use.
  """
  programs: dict[bool | None, Callable[..., Any]] = {}

  def program(sam_step: bool | None = None) -> Callable[..., Any]:
    if sam_step not in programs:
      programs[sam_step] = replicas.map_replicas(
          functools.partial(train_step, model=model, tx=tx, sam_step=sam_step, **loss_kwargs), mesh,
          layout.virtual_replicas, donate_state=True)
    return programs[sam_step]

  def step(state: TrainState, batch: Any, rng: jax.Array,
           sam_step: bool | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
    return program(sam_step)(state, batch, rng)

  typed_step = cast(GlobalTrainStep, step)  # a function with an attribute
  typed_step.program = program  # the jitted program of one kind (to lower, or to time)
  return typed_step


def make_eval_step(model: nn.Module, mesh: Mesh, label_smoothing: float = 0.0,
                   loss: str = "softmax") -> Callable[..., dict[str, jax.Array]]:
  """The jitted global eval step: (state, global batch) -> summed metrics."""
  step = functools.partial(eval_step, model=model, label_smoothing=label_smoothing, loss=loss)
  return replicas.map_replicas(step, mesh)
