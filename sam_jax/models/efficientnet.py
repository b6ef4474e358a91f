"""EfficientNet B0..B8 and L2 (Tan & Le 2019; Xie et al. 2020) as in tensorflow/tpu.

A 3x3/2 stem, seven stages of MBConv blocks (1x1 expansion, depthwise conv, squeeze-
excite with 0.25 x the block's input filters, 1x1 projection; identity skip with
stochastic depth when shapes match) and a 1x1 head conv to 1280 (scaled) filters,
global average pooling, dropout and the classifier. Swish everywhere. BatchNorm momentum
0.99, eps 1e-3, synchronised across replicas in the paper's recipe
(`sync_batch_norm`, as google-research/sam sam_jax/efficientnet/efficientnet.py:310-316
always did). Initialisers as the original's (:60-64): every conv kernel truncated normal
with variance 2 / fan_out, the classifier U(-1/sqrt(classes), 1/sqrt(classes)); depthwise
kernels are laid out [k, k, C, 1] as in TensorFlow (:125-131), so their fan_out is k * k.
Widths and depths scale with the variant's coefficients:
round_filters rounds c * width to a multiple of 8 (never below 90% of it), stage
repeats become ceil(depth * repeats). Stochastic depth grows linearly to 0.2 over the
blocks. Parameters with 1000 classes: b0 5,288,548; b7 66,347,960; L2 about 480M.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sam_jax.models.layers import batch_norm, conv, dense_init

# Kaiming with fan_out, truncated (efficientnet.py:60-61); the classifier's dense_init is
# the original's variance_scaling(1/3, 'fan_out', 'uniform') (:63-64), the same law.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")

# (repeats, kernel, stride, expand ratio, input filters, output filters) of B0's stages.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# name -> (width coefficient, depth coefficient, resolution, dropout rate).
VARIANTS = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
    "efficientnet-b8": (2.2, 3.6, 672, 0.5),
    "efficientnet-l2": (4.3, 5.3, 800, 0.5),
    "efficientnet-l2-475": (4.3, 5.3, 475, 0.5),
}
SE_RATIO, DROP_CONNECT_RATE, BN_MOMENTUM, BN_EPSILON = 0.25, 0.2, 0.99, 1e-3


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """c * width rounded to the nearest multiple of `divisor`, at least 90% of c * width."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def round_repeats(repeats: int, depth: float) -> int:
  return int(math.ceil(depth * repeats))


def stochastic_depth(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """Drops the whole branch per example with probability `rate`, scaling by 1/(1-rate)."""
  if not train or rate == 0:
    return x
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1 - rate, (x.shape[0], 1, 1, 1))
  return x * keep.astype(x.dtype) / (1 - rate)


def efficientnet_bn(module: nn.Module, train: bool, name: str) -> nn.BatchNorm:
  """EfficientNet's BatchNorm (momentum 0.99, eps 1e-3) in `module`'s dtype and axes.

  With `module.frozen_batch_norm` it normalises with the running statistics and never
  updates them, in training too (the paper's finetuning, Appendix C.2).
  """
  return batch_norm(train and not module.frozen_batch_norm, dtype=module.dtype,
                    axis_name=module.bn_axis_name, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                    name=name)


class DepthwiseConv(nn.Module):
  """A k x k depthwise conv whose kernel is [k, k, C, 1], as TensorFlow's and the original's.

  The layout sets the initialiser's fan_out to k * k (not k * k * C), and it is the
  published checkpoints' layout, so they load without a transpose.
  """
  kernel: int
  strides: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    kernel = self.param("kernel", conv_init, (self.kernel, self.kernel, channels, 1))
    return jax.lax.conv_general_dilated(x,
                                        jnp.asarray(kernel,
                                                    self.dtype).swapaxes(-1,
                                                                         -2), (self.strides,) * 2,
                                        "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=channels)


class MBConvBlock(nn.Module):
  """Mobile inverted bottleneck with squeeze-excite (tensorflow/tpu MBConvBlock)."""
  input_filters: int
  output_filters: int
  kernel: int
  strides: int
  expand_ratio: int
  drop_rate: float
  dtype: Any = jnp.float32
  bn_axis_name: Any = None
  frozen_batch_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    bn = functools.partial(efficientnet_bn, self, train)
    conv_ = functools.partial(conv, dtype=self.dtype, kernel_init=conv_init)
    inputs, channels = x, self.input_filters * self.expand_ratio
    if self.expand_ratio != 1:
      x = nn.swish(bn("expand_bn")(conv_(channels, 1, name="expand_conv")(x)))
    x = DepthwiseConv(self.kernel, self.strides, self.dtype, name="depthwise_conv")(x)
    x = nn.swish(bn("depthwise_bn")(x))
    squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
    squeezed = nn.swish(
        conv_(max(1, int(self.input_filters * SE_RATIO)), 1, use_bias=True,
              name="se_reduce")(squeezed))
    squeezed = conv_(channels, 1, use_bias=True, name="se_expand")(squeezed)
    x = nn.sigmoid(squeezed) * x
    x = bn("project_bn")(conv_(self.output_filters, 1, name="project_conv")(x))
    if self.strides == 1 and self.input_filters == self.output_filters:
      x = stochastic_depth(self, x, self.drop_rate, train) + inputs
    return x


class EfficientNet(nn.Module):
  """EfficientNet with the given width/depth coefficients; `resolution` is its input size."""
  width: float
  depth: float
  resolution: int
  dropout_rate: float
  num_classes: int
  dtype: Any = jnp.float32
  bn_axis_name: Any = None
  frozen_batch_norm: bool = False  # finetuning: BatchNorm always uses running statistics

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = functools.partial(efficientnet_bn, self, train)
    conv_ = functools.partial(conv, dtype=self.dtype, kernel_init=conv_init)
    x = conv_(round_filters(32, self.width), 3, 2, name="stem_conv")(x.astype(self.dtype))
    x = nn.swish(bn("stem_bn")(x))
    blocks = [(round_filters(inp, self.width) if i == 0 else round_filters(out, self.width),
               round_filters(out, self.width), kernel, stride if i == 0 else 1, expand)
              for repeats, kernel, stride, expand, inp, out in STAGES
              for i in range(round_repeats(repeats, self.depth))]
    for index, (inp, out, kernel, stride, expand) in enumerate(blocks):
      x = MBConvBlock(inp, out, kernel, stride, expand, DROP_CONNECT_RATE * index / len(blocks),
                      self.dtype, self.bn_axis_name, self.frozen_batch_norm,
                      name=f"blocks_{index}")(x, train)
    x = conv_(round_filters(1280, self.width), 1, name="head_conv")(x)
    x = jnp.mean(nn.swish(bn("head_bn")(x)), axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype,
                    name="head_dense")(x).astype(jnp.float32)
