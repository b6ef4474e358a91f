"""WideResNet (Zagoruyko & Komodakis 2016) as in the original SAM code.

Pre-activation blocks; when a block changes shape its shortcut is a strided average
pool plus zero-padded channels (no 1x1 conv); convs have no bias and use
variance_scaling(2.0, fan_out, normal); BatchNorm momentum 0.9, eps 1e-5, with
statistics per replica unless `bn_axis_name` names the replica axes.
WideResnet28x10 has 36,278,324 parameters with 100 classes.

The classifier's kernel is U(-1/sqrt(num_classes), 1/sqrt(num_classes)), the AutoAugment
implementation's and the original's `utils.dense_layer_init_fn` (google-research/sam
sam_jax/models/wide_resnet.py:236, utils.py:64); the original's docstring reports about
0.5% more error on CIFAR-100 with Flax's default.

`additional_skip_connections` adds the AutoAugment implementation's shortcuts (the
original `--use_additional_skip_connections`, wide_resnet.py:178 and :225): around each
group of blocks, and from the input image to the output of the last group (average-pooled
to its resolution, zero-padded to its channels). Off by default, as in the Wide ResNet
paper. It adds no parameters.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models.layers import BatchNormReLU, add_shortcut, conv, dense_init


class WideResnetBlock(nn.Module):
  """Pre-activation block: [BN-ReLU] conv3x3(stride) BN-ReLU conv3x3 + shortcut."""
  channels: int
  strides: int = 1
  activate_before_residual: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    act = functools.partial(BatchNormReLU, dtype=self.dtype, bn_axis_name=self.bn_axis_name)
    if self.activate_before_residual:
      x = act()(x, train)
      shortcut = x
    else:
      shortcut = x
      x = act()(x, train)
    x = conv(self.channels, 3, self.strides, dtype=self.dtype)(x)
    x = act()(x, train)
    x = conv(self.channels, 3, dtype=self.dtype)(x)
    return add_shortcut(x, shortcut)


class WideResnet(nn.Module):
  """WRN-depth-width: a 16-channel stem, 3 groups of (depth-4)/6 blocks, widths 16k/32k/64k."""
  depth: int
  width: int
  num_classes: int
  additional_skip_connections: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 4) % 6:
      raise ValueError(f"WideResnet depth must be 6n+4, got {self.depth}.")
    blocks_per_group = (self.depth - 4) // 6
    image = x = x.astype(self.dtype)
    x = conv(16, 3, dtype=self.dtype)(x)
    for group, (channels, strides) in enumerate(((16, 1), (32, 2), (64, 2))):
      group_input = x
      for i in range(blocks_per_group):
        x = WideResnetBlock(channels * self.width, strides if i == 0 else 1,
                            activate_before_residual=(group == 0 and i == 0), dtype=self.dtype,
                            bn_axis_name=self.bn_axis_name)(x, train)
      if self.additional_skip_connections:
        x = add_shortcut(x, group_input)
    if self.additional_skip_connections:
      x = add_shortcut(x, image)
    x = BatchNormReLU(dtype=self.dtype, bn_axis_name=self.bn_axis_name)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype)(x)
    return logits.astype(jnp.float32)
