"""The training loss as the analyses see it: per-example cross-entropy of a checkpoint.

Both the Hessian (`hessian.py`) and m-sharpness (`sharpness.py`) measure this function
of the parameters, with the BatchNorm statistics held fixed (eval mode) or computed
from the batch the loss sees (train mode, as in training).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sam_jax.models.layers import train_rngs
from sam_jax.losses import cross_entropy

ExampleLossFn = Callable[[Any, dict[str, jax.Array]], jax.Array]


def example_loss_fn(model: nn.Module, batch_stats: Any, train_batch_norm: bool = False,
                    rng: jax.Array | None = None, kind: str = "softmax") -> ExampleLossFn:
  """(params, batch) -> per-example cross-entropy [b] (no label smoothing, no weight decay).

  Args:
    model: the Flax model of the checkpoint.
    batch_stats: its BatchNorm running statistics (used in eval mode; ignored in train mode).
    train_batch_norm: normalise with the statistics of the batch the loss is given, as in
      training. This also turns on the model's dropout, shake and stochastic depth; their
      draws come from the fixed `rng`, so the loss is still one deterministic function.
    rng: key of those draws in train mode (default `jax.random.key(0)`).
    kind: the run's loss, "softmax" or "sigmoid" (`losses.cross_entropy`).
  """
  rng = jax.random.key(0) if rng is None else rng

  def loss_fn(params, batch):
    variables = {"params": params, "batch_stats": batch_stats}
    if train_batch_norm:
      logits, _ = model.apply(variables, batch["image"], train=True, rngs=train_rngs(rng),
                              mutable=["batch_stats"])
    else:  # flax types apply() as output | (output, state); without `mutable` it is the output
      logits: jax.Array = model.apply(  # pyright: ignore[reportAssignmentType]
          variables, batch["image"], train=False)
    return cross_entropy(logits.astype(jnp.float32), batch["label"], kind=kind)

  return loss_fn


def padded_batches(examples: dict[str, np.ndarray], batch_size: int):
  """Yields {"image", "label", "mask"} batches of exactly `batch_size`; padding has mask 0."""
  count = len(examples["label"])
  for start in range(0, count, batch_size):
    batch = {name: values[start:start + batch_size] for name, values in examples.items()}
    missing = batch_size - len(batch["label"])
    batch["mask"] = np.ones(len(batch["label"]), np.float32)
    yield {
        name: np.concatenate([values, np.zeros((missing,) + values.shape[1:], values.dtype)])
        for name, values in batch.items()
    }
