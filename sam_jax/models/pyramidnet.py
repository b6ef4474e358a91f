"""PyramidNet (Han et al. 2017), with or without ShakeDrop (Yamada et al. 2018).

As in the original SAM / AutoAugment code: PyramidNet-272 with alpha 200, bottleneck
blocks BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(4x)-BN whose widths grow by
alpha / L per block (L = 3 (depth-2)/9 blocks), rounded rather than truncated; the
shortcut average-pools and zero-pads channels. `Pyramid_ShakeDrop` has 26,288,692
parameters with 100 classes.

ShakeDrop scales block l's residual branch by b + alpha - b alpha, with b ~ Bernoulli(p_l),
p_l = 1 - 0.5 l / L, alpha ~ U[-1, 1] per example in the forward pass, and by
b + beta - b beta with beta ~ U[0, 1] in the backward pass; at evaluation by its
expectation p_l. `true_gradient=True` uses the forward coefficient in the backward pass
(the original SAM code's ascent pass).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sam_jax.models.layers import (batch_norm, conv, dense_init, forward_backward,
                                   per_example_uniform, pooled_shortcut)


def shake_drop(module: nn.Module, x: jax.Array, keep_prob: float, train: bool,
               true_gradient: bool) -> jax.Array:
  """ShakeDrop of a residual branch (Yamada et al. 2018, eq. 6)."""
  if not train:
    return keep_prob * x  # E[b + alpha - b alpha] with E[alpha] = 0
  b = jax.random.bernoulli(module.make_rng("dropout"), keep_prob,
                           (x.shape[0], 1, 1, 1)).astype(x.dtype)
  alpha, beta = per_example_uniform(module, x, -1.0,
                                    1.0)[0], per_example_uniform(module, x, 0.0, 1.0)[0]
  forward = (b + alpha - b * alpha) * x
  if true_gradient:
    return forward
  return forward_backward(forward, (b + beta - b * beta) * x)


class PyramidBottleneck(nn.Module):
  """BN-1x1-BN-ReLU-3x3(stride)-BN-ReLU-1x1(4x)-BN, optional ShakeDrop, + shortcut."""
  channels: int
  strides: int
  keep_prob: float | None  # None: no ShakeDrop
  true_gradient: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=name)
    y = bn("bn_1_pre")(x)
    y = nn.relu(
        bn("bn_1_post")(conv(self.channels, 1, dtype=self.dtype, name="1x1_conv_contract")(y)))
    y = nn.relu(bn("bn_2")(conv(self.channels, 3, self.strides, dtype=self.dtype, name="3x3")(y)))
    y = bn("bn_3")(conv(4 * self.channels, 1, dtype=self.dtype, name="1x1_conv_expand")(y))
    if self.keep_prob is not None:
      y = shake_drop(self, y, self.keep_prob, train, self.true_gradient)
    return pooled_shortcut(x, 4 * self.channels, self.strides) + y


class PyramidNet(nn.Module):
  """Bottleneck PyramidNet-depth with widening factor alpha; ShakeDrop optional."""
  depth: int
  alpha: int
  num_classes: int
  shake_drop: bool = True
  true_gradient: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 2) % 9:
      raise ValueError(f"PyramidNet depth must be 9n+2 (bottleneck), got {self.depth}.")
    blocks_per_group = (self.depth - 2) // 9
    total = 3 * blocks_per_group
    x = conv(16, 3, dtype=self.dtype, name="init_conv")(x.astype(self.dtype))
    x = batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name="init_bn")(x)
    channels = 16.0
    for layer in range(1, total + 1):
      channels += self.alpha / total
      group, index = divmod(layer - 1, blocks_per_group)
      strides = 2 if group > 0 and index == 0 else 1
      keep_prob = 1.0 - 0.5 * layer / total if self.shake_drop else None
      x = PyramidBottleneck(
          int(round(channels)), strides, keep_prob, self.true_gradient, self.dtype,
          self.bn_axis_name)(x, train)
    x = batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name="final_bn")(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=dense_init,
                    dtype=self.dtype)(x).astype(jnp.float32)
