"""ResNets: ImageNet ResNet v1.5 (He et al. 2016), as the paper's Table 2 ran it and in
its standard form, and the CIFAR ResNet-(6n+2) of He et al. (2016, Sec. 4.2) used by the
label-noise study.

ImageNet: 7x7/2 stem, 3x3/2 max-pool, 4 stages of basic (18, 34) or bottleneck (50+)
blocks with 64/128/256/512 base widths, the stride on the 3x3 conv (v1.5), 1x1
projection shortcuts when the shape changes, the last BN of each block initialised to
zero; BatchNorm momentum 0.9, eps 1e-5. ResNet-50 has 25,557,032 parameters with 1000
classes. Two variants of the same parameters:
- `Resnet50` (the paper's; google-research/sam sam_jax/imagenet_models/resnet.py, forked
  from an early Flax example): no ReLU after the stem BatchNorm (:88-90) and old Flax's
  default initialisers, lecun-normal (truncated normal, variance 1 / fan_in) for every
  conv and the classifier (:82 `nn.Conv.partial(bias=False)`, :100 `nn.Dense`).
- `Resnet50_v1.5` (the standard ResNet v1.5 of torchvision and MLPerf): ReLU after the
  stem BatchNorm and He-normal fan-out convs.
CIFAR: a 16-channel 3x3 stem and 3 stages of n basic blocks (16/32/64), with identity
shortcuts that average-pool and zero-pad (option A); ResNet-32 has n = 5.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models.layers import add_shortcut, batch_norm, conv, conv_init

STAGES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3)
}


class ResidualBlock(nn.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) block, post-activation."""
  filters: int
  strides: int = 1
  bottleneck: bool = False
  projection: bool = True  # 1x1 conv + BN shortcut on a shape change; else option A
  dtype: Any = jnp.float32
  bn_axis_name: Any = None
  kernel_init: Any = conv_init

  @nn.compact
  def __call__(self, x, train: bool):
    bn = functools.partial(batch_norm, train, dtype=self.dtype, axis_name=self.bn_axis_name)
    conv_ = functools.partial(conv, dtype=self.dtype, kernel_init=self.kernel_init)
    if self.bottleneck:
      shapes = ((self.filters, 1, 1), (self.filters, 3, self.strides), (4 * self.filters, 1, 1))
    else:
      shapes = ((self.filters, 3, self.strides), (self.filters, 3, 1))
    y = x
    for i, (features, kernel, strides) in enumerate(shapes):
      y = conv_(features, kernel, strides)(y)
      last = i == len(shapes) - 1
      y = bn(
          scale_init=nn.initializers.zeros if last and self.projection else nn.initializers.ones)(
              y)
      if not last:
        y = nn.relu(y)
    if not self.projection:
      return nn.relu(add_shortcut(y, x))
    if x.shape != y.shape:
      x = bn(name="norm_proj")(conv_(y.shape[-1], 1, self.strides, name="conv_proj")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ImageNet ResNet v1.5 of `depth` in STAGES: the paper's by default, the standard one
  with `stem_relu=True, kernel_init=conv_init` (module docstring)."""
  depth: int
  num_classes: int
  dtype: Any = jnp.float32
  bn_axis_name: Any = None
  stem_relu: bool = False
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv(64, 7, 2, dtype=self.dtype, padding=[(3, 3), (3, 3)], name="conv_init",
             kernel_init=self.kernel_init)(
                 x.astype(self.dtype))
    x = batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name="bn_init")(x)
    x = nn.relu(x) if self.stem_relu else x
    x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
    for stage, blocks in enumerate(STAGES[self.depth]):
      for i in range(blocks):
        x = ResidualBlock(64 * 2 ** stage, 2 if stage > 0 and i == 0 else 1, bottleneck=self.depth
                          >= 50, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                          kernel_init=self.kernel_init)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 images: 3 stages of n basic blocks, option-A shortcuts."""
  depth: int
  num_classes: int
  dtype: Any = jnp.float32
  bn_axis_name: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}.")
    x = conv(16, 3, dtype=self.dtype)(x.astype(self.dtype))
    x = nn.relu(batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name)(x))
    for stage in range(3):
      for i in range((self.depth - 2) // 6):
        x = ResidualBlock(16 * 2 ** stage, 2 if stage > 0 and i == 0 else 1, projection=False,
                          dtype=self.dtype, bn_axis_name=self.bn_axis_name)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
