# pyright: strict, reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false, reportUnknownLambdaType=false
# pyright: reportMissingTypeStubs=false
"""The optimizer built from a config: SAM in front of SGD, schedules, weight decay, clipping.

The chain, applied per replica, is (Foret et al. 2021, Algorithm 1 and the original code):

    sam(rho) -> cross_replica_mean -> clip_by_global_norm -> record_global_norm
             -> base direction -> [decoupled weight decay] -> learning-rate schedule

where sam(rho) stands for `config.sam.variant`, built by its entry in `family.registry`,
and the base direction for `config.optimizer`: sgd, [Nesterov] momentum (the original);
rmsprop, TF1 RMSProp then momentum; adamw, Adam's m / (sqrt(v) + eps) (Loshchilov & Hutter
2019 with the decoupled decay); lion, sign(b1 m + (1 - b1) g) (Chen et al. 2023).
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from sam_jax import masks
from sam_jax.family import registry
from sam_jax.sam import cross_replica_mean, find_state

if TYPE_CHECKING:  # configs need ml_collections ([train]); the optimizer itself does not
  import ml_collections


def total_steps(config: "ml_collections.ConfigDict", steps_per_epoch: int) -> int:
  """The run's length: `num_train_steps` when set (finetuning), else `num_epochs` epochs."""
  return config.num_train_steps or config.num_epochs * steps_per_epoch


# What the SAM pass returns besides its gradient (steps.train_step): loss and error at w + eps.
PERTURBED_METRICS = {"loss": 0.0, "error": 0.0}
END_OF_EXPONENTIAL = 0.012  # the original: "lr should be 1.2% of original value" at the end
# An optax schedule as `family` takes it: optax types its value as ArrayLike, but its
# schedules map a step (jax.Array) to a jax.Array.
ArraySchedule = Callable[[jax.Array], jax.Array]


def learning_rate_schedule(config: "ml_collections.ConfigDict",
                           steps_per_epoch: int) -> optax.Schedule:
  """Per-iteration schedule: linear warmup, then cosine / exponential / constant.

  cosine: lr * 0.5 (1 + cos(pi t / T)) over the steps after warmup (the original default).
  linear: from lr to lr * linear_end over the steps after warmup (the ViT recipes).
  exponential: the original's lr * exp(-t / lambda), t in epochs (fractional), with
    lambda = -num_epochs / ln(0.012): it ends at 1.2% of lr whatever the run's length
    (google-research/sam flax_training.py:351-421), i.e. lr * 0.012^(step / steps).
    The original multiplied by min(t / warmup_epochs, 1) with warmup_epochs = 0, which is
    NaN at step 0; here every schedule is finite there.
  After a warmup, the decay runs over the remaining steps.
  """
  lr = config.learning_rate
  total = total_steps(config, steps_per_epoch)
  warmup = warmup_steps(config, steps_per_epoch)
  name = config.lr_schedule if config.use_learning_rate_schedule else "constant"
  if name == "cosine":
    main = optax.cosine_decay_schedule(lr, max(total - warmup, 1))
  elif name == "linear":
    main = optax.linear_schedule(lr, lr * config.linear_end, max(total - warmup, 1))
  elif name == "exponential":
    main = optax.exponential_decay(lr, max(total - warmup, 1), END_OF_EXPONENTIAL)
  else:  # constant (validation.CHOICES)
    main = optax.constant_schedule(lr)
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def warmup_steps(config: "ml_collections.ConfigDict", steps_per_epoch: int) -> int:
  """The warmup's length in steps: `warmup_steps` if set, else `warmup_epochs` worth."""
  if config.warmup_steps is not None:
    return config.warmup_steps
  return int(config.warmup_epochs * steps_per_epoch)


def ema_decay(step: jax.Array, decay: float, warmup_steps: int) -> jax.Array:
  """The original's EMA decay after update number `step` (1 after the first update).

  0 (the average is the parameters) before `warmup_steps`, then
  min(decay, (1 + t) / (10 + t)) with t = step - warmup_steps, as TensorFlow's
  ExponentialMovingAverage with num_updates (google-research/sam
  sam_jax/efficientnet/optim.py:276-282; warmup 1560 at flax_training.py:784).
  """
  t = jnp.asarray(step, jnp.float32) - warmup_steps
  return jnp.where(t >= 0, jnp.minimum(decay, (1.0 + t) / (10.0 + t)), 0.0)


def weight_decay_mask(params: Any, no_weight_decay_on_bn: bool, kernels_only: bool = False) -> Any:
  """True where weight decay applies: everywhere, only on ndim > 1 leaves
  (`no_weight_decay_on_bn`), or only on the leaves named "kernel" (`kernels_only`: dense
  and convolution weights, as big_vision's default wd_mults `.*/kernel$`, optax.py:133;
  no biases, norms, position embeddings or class token)."""
  if kernels_only:
    return jax.tree_util.tree_map_with_path(lambda path, w: masks.entry_name(path[-1]) == "kernel",
                                            params)
  return jax.tree.map(lambda w: (not no_weight_decay_on_bn) or w.ndim > 1, params)


def l2_penalty(params: Any, weight_decay: float, mask: Any) -> jax.Array | float:
  """The original's weight decay as a loss term: 0.5 * wd * sum of ||w||^2 over `mask` (a
  Python 0.0 when `mask` is False everywhere)."""
  squares = jax.tree.map(lambda w, m: jnp.sum(jnp.square(w)) if m else 0.0, params, mask)
  return 0.5 * weight_decay * sum(jax.tree.leaves(squares))


def tf1_rmsprop(decay: float = 0.9, eps: float = 1e-3) -> optax.GradientTransformation:
  """TF1's RMSProp scaling, as the EfficientNet recipe and the original SAM code use it.

  v <- decay v + (1 - decay) g^2 with v starting at 1 (not 0), then g / sqrt(v + eps);
  momentum (heavy ball, not Nesterov) follows in the chain.
  """
  return optax.scale_by_rms(decay=decay, eps=eps, initial_scale=1.0, eps_in_sqrt=True)


class NormState(NamedTuple):
  """The global norm of the updates that last went through `record_global_norm`."""
  global_norm: jax.Array


def update_norm(opt_state: Any) -> jax.Array | None:
  """The norm that `record_global_norm` last recorded in an optimizer state, or None."""
  state = find_state(opt_state, NormState)
  return None if state is None else state.global_norm


def record_global_norm() -> optax.GradientTransformation:
  """Passes the updates through and keeps their global L2 norm in the state.

  Placed after the cross-replica mean and clipping, it is the original's logged
  `gradient_norm` (flax_training.py:573-583): the norm of the gradient the optimizer uses.
  """
  return optax.GradientTransformation(
      lambda params: NormState(jnp.zeros([], jnp.float32)), lambda updates, state, params=None:
      (updates, NormState(optax.tree_utils.tree_norm(updates).astype(jnp.float32))))


def final_learning_rate(config: "ml_collections.ConfigDict") -> float:
  """The schedule's last value: 0 (cosine), lr * linear_end (linear), 1.2% of lr
  (exponential) or lr (constant)."""
  name = config.lr_schedule if config.use_learning_rate_schedule else "constant"
  return {
      "cosine": 0.0,
      "linear": config.learning_rate * config.linear_end,
      "exponential": config.learning_rate * END_OF_EXPONENTIAL
  }.get(name, config.learning_rate)


def weight_decay_type(config: "ml_collections.ConfigDict") -> str:
  """config.weight_decay_type, or when unset the base optimizer's own: "l2" in the loss for
  sgd and rmsprop (the original), "decoupled" for adamw and lion."""
  if config.weight_decay_type:
    return config.weight_decay_type
  return "decoupled" if config.optimizer in ("adamw", "lion") else "l2"


def base_direction(config: "ml_collections.ConfigDict") -> list[optax.GradientTransformation]:
  """`config.optimizer`'s update direction from the clipped gradient, before weight decay
  and the learning rate (see the module docstring)."""
  if config.optimizer == "adamw":
    return [optax.scale_by_adam(config.adam_beta1, config.adam_beta2, config.adam_eps)]
  if config.optimizer == "lion":
    return [optax.scale_by_lion(config.lion_beta1, config.lion_beta2)]
  parts = [tf1_rmsprop()] if config.optimizer == "rmsprop" else []
  if config.momentum > 0:  # sgd, rmsprop
    parts.append(
        optax.trace(decay=config.momentum, nesterov=config.nesterov and config.optimizer == "sgd"))
  return parts


def create_optimizer(config: "ml_collections.ConfigDict", steps_per_epoch: int,
                     replica_axes: Sequence[str]) -> optax.GradientTransformationExtraArgs:
  """The per-replica optimizer chain described in the module docstring.

  Weight decay of type "l2" lives in the loss (see `l2_penalty`), so both SAM passes see
  it; type "decoupled" (`weight_decay_type`) adds wd * w to the base direction before the
  learning rate (SGDW and AdamW, Loshchilov & Hutter 2019), outside SAM, on the
  parameters `weight_decay_mask` selects. The variant's registry entry
  (`family.registry`) puts its transformation around this base: in front of it for most,
  at its end or around all of it for others.
  """
  schedule = learning_rate_schedule(config, steps_per_epoch)
  parts = [cross_replica_mean(tuple(replica_axes))]
  if config.gradient_clipping > 0:
    parts.append(optax.clip_by_global_norm(config.gradient_clipping))
  parts.append(record_global_norm())
  parts.extend(base_direction(config))
  if weight_decay_type(config) == "decoupled" and config.weight_decay > 0:
    parts.append(
        optax.add_decayed_weights(
            config.weight_decay, mask=lambda p: weight_decay_mask(
                p, config.no_weight_decay_on_bn, config.weight_decay_kernels_only)))
  parts.append(optax.scale_by_learning_rate(schedule))
  return registry.build_chain(
      registry.Chain(config.sam, tuple(parts),
                     cast(ArraySchedule,
                          schedule), (config.learning_rate, final_learning_rate(config)),
                     tuple(replica_axes), config.seed, PERTURBED_METRICS,
                     total_steps(config, steps_per_epoch), steps_per_epoch * config.batch_size))
