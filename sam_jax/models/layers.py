"""Pieces the model families share: initialisers, BatchNorm, and the shake trick.

Every model computes in its `dtype` (float32 or bfloat16) while parameters and BatchNorm
statistics stay float32 (Flax's `param_dtype`), and returns float32 logits.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Kaiming normal with fan_out (gain 2), the original's conv initialiser.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def dense_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """U[-1/sqrt(n_out), 1/sqrt(n_out)]: the AutoAugment / original SAM classifier init."""
  scale = 1.0 / shape[-1] ** 0.5
  return jax.random.uniform(key, shape, dtype, -scale, scale)


def batch_norm(train: bool, *, dtype: Any, axis_name: Any = None, momentum: float = 0.9,
               epsilon: float = 1e-5, name: str | None = None, **kwargs) -> nn.BatchNorm:
  """BatchNorm with batch statistics when training, running averages otherwise.

  `axis_name` (the replica axes) synchronises the statistics across replicas.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                      dtype=dtype, axis_name=axis_name, name=name, **kwargs)


def forward_backward(forward: jax.Array, backward: jax.Array) -> jax.Array:
  """The value of `forward` with the gradient of `backward` (Gastaldi 2017's trick)."""
  return backward + jax.lax.stop_gradient(forward - backward)


def conv(features: int, kernel: int, strides: int = 1, *, dtype: Any, **kwargs) -> nn.Conv:
  """A bias-free SAME conv with the Kaiming fan-out initialiser."""
  kwargs = {"use_bias": False, "kernel_init": conv_init, "padding": "SAME", **kwargs}
  return nn.Conv(features, (kernel, kernel), (strides, strides), dtype=dtype, **kwargs)


def per_example_uniform(module: nn.Module, x: jax.Array, low: float, high: float,
                        count: int = 1) -> list[jax.Array]:
  """`count` draws of U[low, high) shaped [batch, 1, 1, 1], from the 'dropout' stream."""
  keys = jax.random.split(module.make_rng("dropout"), count)
  return [jax.random.uniform(k, (x.shape[0], 1, 1, 1), jnp.float32, low, high).astype(x.dtype)
          for k in keys]
