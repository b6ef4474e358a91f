"""Pieces the model families share: initialisers, convs, BatchNorm, shortcuts, the shake
trick, patch embeddings.

Every model computes in its `dtype` (float32 or bfloat16) while parameters and BatchNorm
statistics stay float32 (Flax's `param_dtype`), and returns float32 logits.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sam_jax import convolution
from sam_jax.errors import UsageError

# Kaiming normal with fan_out (gain 2), the original's conv initialiser.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def dense_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """U[-1/sqrt(n_out), 1/sqrt(n_out)]: the AutoAugment / original SAM classifier init."""
  scale = 1.0 / shape[-1] ** 0.5
  return jax.random.uniform(key, shape, dtype, -scale, scale)


def conv(features: int, kernel: int, strides: int = 1, *, dtype: Any, **kwargs) -> nn.Conv:
  """A bias-free SAME conv with the Kaiming fan-out initialiser."""
  kwargs = {
      "use_bias": False,
      "kernel_init": conv_init,
      "padding": "SAME",
      "conv_general_dilated": convolution.conv_general_dilated,
      **kwargs
  }
  return nn.Conv(features, (kernel, kernel), (strides, strides), dtype=dtype, **kwargs)


def batch_norm(train: bool, *, dtype: Any, axis_name: Any = None, momentum: float = 0.9,
               epsilon: float = 1e-5, name: str | None = None, **kwargs) -> nn.BatchNorm:
  """BatchNorm with batch statistics when training, running averages otherwise.

  `axis_name` (the replica axes) synchronises the statistics across replicas.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                      dtype=dtype, axis_name=axis_name, name=name, **kwargs)


class BatchNormReLU(nn.Module):
  """BatchNorm (momentum 0.9, eps 1e-5) then ReLU, in `dtype` with float32 statistics."""
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    return nn.relu(batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name)(x))


def pooled_shortcut(x: jax.Array, channels: int, strides: int) -> jax.Array:
  """The parameter-free shortcut: average-pool by `strides`, zero-pad to `channels`."""
  if strides != 1:
    x = nn.avg_pool(x, (strides, strides), (strides, strides))
  return jnp.pad(x, [(0, 0), (0, 0), (0, 0), (0, channels - x.shape[-1])])


def add_shortcut(block_out: jax.Array, block_in: jax.Array) -> jax.Array:
  """block_out + the pooled shortcut of block_in, shaped to block_out (option A)."""
  strides = block_in.shape[-2] // block_out.shape[-2]
  return block_out + pooled_shortcut(block_in, block_out.shape[-1], strides)


def embed_patches(x: jax.Array, hidden: int, patch: int, *, dtype: Any, name: str) -> jax.Array:
  """Non-overlapping patch x patch patches, each linearly embedded (a strided VALID conv, as
  the Vision Transformer and the Mixer do): [n, h/patch * w/patch tokens, hidden].

  Raises:
    UsageError: when `patch` does not divide the image, whose borders would be dropped.
  """
  n, h, w, _ = x.shape
  if h % patch or w % patch:
    raise UsageError(f"A patch size of {patch} does not divide {h}x{w} images: choose one "
                     f"that does (16 or 32 at 224 px, 4 for CIFAR, 2 for the digits).")
  embed = nn.Conv(hidden, (patch, patch), strides=(patch, patch), padding="VALID", dtype=dtype,
                  name=name)
  x = embed(x)
  return x.reshape(n, (h // patch) * (w // patch), hidden)


def forward_backward(forward: jax.Array, backward: jax.Array) -> jax.Array:
  """The value of `forward` with the gradient of `backward` (Gastaldi 2017's trick)."""
  return backward + jax.lax.stop_gradient(forward - backward)


def train_rngs(key: jax.Array, redraw_masks: bool = False) -> dict[str, jax.Array]:
  """The random streams of a training forward pass, from one key.

  'dropout' draws the Bernoulli masks (dropout, ShakeDrop's gate, stochastic depth),
  'shake' the uniform shake coefficients. The two SAM passes share both by default, so
  that g_sam differs from g only through eps: the cleaner estimator of the sharpness
  gradient. `redraw_masks=True` (for the SAM pass) draws new masks and keeps the shake
  coefficients, as the original run did: its train.py:76-82 replaced
  jax.random.bernoulli with `lax.rng_uniform(...) < p`, a stateful generator that
  ignores the key, so each pass drew its own masks while the uniform draws
  (models/utils.py:162-176) came from the key both passes shared.
  """
  masks = jax.random.fold_in(key, 2) if redraw_masks else key
  return {"dropout": masks, "shake": jax.random.fold_in(key, 1)}


def per_example_uniform(module: nn.Module, x: jax.Array, low: float, high: float,
                        count: int = 1) -> list[jax.Array]:
  """`count` draws of U[low, high) shaped [batch, 1, 1, 1], from the 'shake' stream."""
  keys = jax.random.split(module.make_rng("shake"), count)
  return [
      jax.random.uniform(k, (x.shape[0], 1, 1, 1), jnp.float32, low, high).astype(x.dtype)
      for k in keys
  ]
