# pyright: strict, reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false, reportUnknownLambdaType=false
# pyright: reportMissingTypeStubs=false
"""The train step's passes over one replica's batch: the clean gradient, the gradient at
another point, the per-example losses and Functional-SAM's gradient (`steps.train_step`)."""

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sam_jax import optim, replicas
from sam_jax.losses import cross_entropy

Batch = dict[str, jax.Array]  # a batch, or the rngs of a pass


def gradient_passes(model: nn.Module, label_smoothing: float, l2_weight_decay: float,
                    decay_mask: Any, replica_mapping: str, ascent_model: nn.Module,
                    loss: str = "softmax"):
  """The train step's passes over one replica's batch, mapped by `replica_mapping`.

  clean: (loss, (per-example losses, logits, BatchNorm statistics)), gradient at w, of
  `ascent_model`; sam: the same gradient and aux at another point; losses: the
  per-example losses (forward only; ESAM's data selection); functional: Functional-SAM's
  J_F(p)^T dL/dF(F(w)) + grad R(p) and aux, given the logits F(w) as a last argument.
  Arguments of each: (params, batch_stats, batch, rngs).
  """
  def forward(params: Mapping[str, Any], batch_stats: Any, batch: Batch, rngs: Batch,
              model: nn.Module = model) -> tuple[jax.Array, jax.Array, Mapping[str, Any]]:
    logits, mutated = model.apply({
        "params": params,
        "batch_stats": batch_stats
    }, batch["image"], train=True, rngs=rngs, mutable=["batch_stats"])
    return cross_entropy(logits, batch["label"], label_smoothing, loss), logits, mutated

  def loss_fn(params: Mapping[str, Any], batch_stats: Any, batch: Batch, rngs: Batch,
              model: nn.Module = model) -> tuple[jax.Array, tuple[jax.Array, jax.Array, Any]]:
    example_losses, logits, mutated = forward(params, batch_stats, batch, rngs, model)
    loss = jnp.mean(example_losses) + optim.l2_penalty(params, l2_weight_decay, decay_mask)
    return loss, (example_losses, logits, mutated.get("batch_stats", {}))

  def functional_loss(params: Mapping[str, Any], batch_stats: Any, batch: Batch, rngs: Batch,
                      clean_logits: jax.Array) -> tuple[jax.Array, Any]:
    """<dL/dF at the clean logits, F(params)> + R(params): its gradient is J_F^T dL/dF + grad R."""
    cotangent = jax.grad(
        lambda logits: jnp.mean(cross_entropy(logits, batch["label"], label_smoothing, loss)))(
            clean_logits)
    example_losses, logits, mutated = forward(params, batch_stats, batch, rngs)
    surrogate = jnp.sum(jax.lax.stop_gradient(cotangent) * logits)
    surrogate += optim.l2_penalty(params, l2_weight_decay, decay_mask)
    return surrogate, (example_losses, logits, mutated.get("batch_stats", {}))

  passes = (jax.value_and_grad(functools.partial(loss_fn, model=ascent_model),
                               has_aux=True), jax.grad(loss_fn, has_aux=True),
            lambda *args: forward(*args)[0], jax.grad(functional_loss, has_aux=True))
  return tuple(replicas.one_replica_at_a_time(f, replica_mapping) for f in passes)
