"""Shake-Shake WideResNet (Gastaldi 2017) as in the original SAM / AutoAugment code.

"Shake-Shake 26 2x96d" is `WideResnet28x6_ShakeShake`: a 16-channel stem, 3 groups of 4
blocks with widths 16k/32k/64k (k = 6). Each block has two branches
ReLU-conv3x3-BN-ReLU-conv3x3-BN mixed per example as  g a + (1 - g) b  with a gate
g ~ U(0, 1) in the forward pass and an independent g' ~ U(0, 1) in the backward pass
(0.5 / 0.5 at evaluation). When a block changes shape, its shortcut is Gastaldi's: two
1x1 convs on the strided input and on the input shifted by one pixel, concatenated,
then BN. 26,227,572 parameters with 100 classes.

`true_gradient=True` uses the forward gate in the backward pass too, so the gradient is
that of the function actually computed; the original SAM code used it for the ascent
(perturbation) pass, which our train step does too.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sam_jax.models.layers import (batch_norm, conv, dense_init, forward_backward,
                                   per_example_uniform)


def shake_shake(module: nn.Module, a: jax.Array, b: jax.Array, train: bool,
                true_gradient: bool) -> jax.Array:
  """Per-example gated mix of two branches: U(0,1) gates in training, 0.5 at evaluation."""
  if not train:
    return 0.5 * (a + b)
  forward_gate, backward_gate = per_example_uniform(module, a, 0.0, 1.0, count=2)
  forward = forward_gate * a + (1 - forward_gate) * b
  if true_gradient:
    return forward
  return forward_backward(forward, backward_gate * a + (1 - backward_gate) * b)


class GastaldiShortcut(nn.Module):
  """Two strided 1x1 convs, the second on the input shifted by one pixel, then BN."""
  channels: int
  strides: int
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    s = self.strides
    shifted = jnp.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)])[:, 1:, 1:, :]
    halves = [
        conv(self.channels // 2, 1, dtype=self.dtype, name=name)(h[:, ::s, ::s, :])
        for name, h in (("conv_h1", x), ("conv_h2", shifted))
    ]
    return batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name)(
        jnp.concatenate(halves, axis=-1))


class ShakeShakeBlock(nn.Module):
  """Two ReLU-conv-BN-ReLU-conv-BN branches, shake-shake mixed, plus the shortcut."""
  channels: int
  strides: int = 1
  true_gradient: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    def branch(name):
      y = conv(self.channels, 3, self.strides, dtype=self.dtype, name=f"conv_{name}_1")(nn.relu(x))
      y = nn.relu(
          batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=f"bn_{name}_1")(y))
      y = conv(self.channels, 3, dtype=self.dtype, name=f"conv_{name}_2")(y)
      return batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=f"bn_{name}_2")(
          y)

    mixed = shake_shake(self, branch("a"), branch("b"), train, self.true_gradient)
    if x.shape[-1] != self.channels:
      x = GastaldiShortcut(self.channels, self.strides, self.dtype, self.bn_axis_name)(x, train)
    return x + mixed


class WideResnetShakeShake(nn.Module):
  """Shake-Shake-(6n+2) with widths 16k/32k/64k: 3 groups of n blocks."""
  blocks_per_group: int
  channel_multiplier: int
  num_classes: int
  true_gradient: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv(16, 3, dtype=self.dtype, name="init_conv")(x.astype(self.dtype))
    x = batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name="init_bn")(x)
    for channels, strides in ((16, 1), (32, 2), (64, 2)):
      for i in range(self.blocks_per_group):
        x = ShakeShakeBlock(channels * self.channel_multiplier, strides if i == 0 else 1,
                            self.true_gradient, self.dtype, self.bn_axis_name)(x, train)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=dense_init,
                    dtype=self.dtype)(x).astype(jnp.float32)
