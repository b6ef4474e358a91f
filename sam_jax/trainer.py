"""Training state and the per-replica SAM train and eval steps.

Each step is written for one replica (m examples) with collectives over
`replicas.REPLICA_AXES`; `replicas.map_replicas` turns it into one program over
devices and virtual replicas.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from sam_jax import optim, replicas


class TrainState(struct.PyTreeNode):
  """Everything a training run carries from step to step (identical on all replicas)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def init_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                     image_shape: tuple[int, ...]) -> TrainState:
  """Initialises parameters (float32), BatchNorm statistics and optimizer state."""
  variables = model.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy against one-hot labels smoothed towards uniform."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               model: nn.Module, tx: optax.GradientTransformationExtraArgs,
               l2_weight_decay: float = 0.0, no_weight_decay_on_bn: bool = False,
               label_smoothing: float = 0.0,
               replica_by_replica: bool = True) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SAM step for one replica; call it through `replicas.map_replicas`.

  1. g = grad of this replica's loss (cross-entropy + optional 0.5 wd ||w||^2).
  2. `tx` (see `optim.create_optimizer`) perturbs w by eps(g), evaluates the same loss
     with the same dropout/shake randomness at w + eps, averages that gradient over all
     replicas, clips it and updates w (not w + eps).
  3. BatchNorm running statistics come from the clean pass only, averaged over the
     replicas (EMAs are linear, so this equals averaging them at evaluation time).

  Args:
    state: the replicated training state.
    batch: {"image": [m, H, W, C], "label": [m]} for this replica.
    rng: the run's base key; folded with the step and the replica index.
    model, tx: the Flax model and the optimizer chain.
    l2_weight_decay: wd of the in-loss weight decay (0 when decay is decoupled).
    no_weight_decay_on_bn: exclude ndim <= 1 parameters from the in-loss decay.
    label_smoothing: smoothing of the one-hot targets.
    replica_by_replica: evaluate the two gradient passes one virtual replica at a time
      (`replicas.one_replica_at_a_time`, fast); must be False when the model
      synchronises BatchNorm across replicas.

  Returns:
    The new state and metrics averaged over replicas.
  """
  rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), replicas.replica_index())
  decay_mask = optim.weight_decay_mask(state.params, no_weight_decay_on_bn)

  def loss_fn(params, batch_stats, batch, rng):
    logits, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
        rngs={"dropout": rng}, mutable=["batch_stats"])
    data_loss = jnp.mean(cross_entropy(logits, batch["label"], label_smoothing))
    loss = data_loss + optim.l2_penalty(params, l2_weight_decay, decay_mask)
    return loss, (data_loss, logits, mutated.get("batch_stats", {}))

  clean_pass = jax.value_and_grad(loss_fn, has_aux=True)
  sam_pass = jax.grad(lambda *args: loss_fn(*args)[0])
  if replica_by_replica:
    clean_pass, sam_pass = map(replicas.one_replica_at_a_time, (clean_pass, sam_pass))
  (_, (data_loss, logits, batch_stats)), grads = clean_pass(
      state.params, state.batch_stats, batch, rng)
  grad_fn = lambda params: sam_pass(params, state.batch_stats, batch, rng)
  updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "loss": data_loss,
      "error": jnp.mean(jnp.argmax(logits, -1) != batch["label"]),
      "grad_norm": optax.tree_utils.tree_norm(grads),
  }
  batch_stats, metrics = jax.lax.pmean((batch_stats, metrics), replicas.REPLICA_AXES)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              model: nn.Module) -> dict[str, jax.Array]:
  """Sums of loss, errors and examples over all replicas; padded examples have mask 0."""
  logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                       batch["image"], train=False)
  mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
  sums = {
      "loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
      "error": jnp.sum((jnp.argmax(logits, -1) != batch["label"]) * mask),
      "count": jnp.sum(mask),
  }
  return jax.lax.psum(sums, replicas.REPLICA_AXES)


def make_train_step(model: nn.Module, tx: optax.GradientTransformationExtraArgs, mesh,
                    layout: replicas.Layout, **loss_kwargs):
  """The jitted global train step: (state, global batch, rng) -> (state, metrics)."""
  step = functools.partial(train_step, model=model, tx=tx, **loss_kwargs)
  return replicas.map_replicas(step, mesh, layout.virtual_replicas, donate_state=True)


def make_eval_step(model: nn.Module, mesh):
  """The jitted global eval step: (state, global batch) -> summed metrics."""
  return replicas.map_replicas(functools.partial(eval_step, model=model), mesh)
