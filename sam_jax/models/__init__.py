"""Model registry: `get_model(name, num_classes, dtype)` for every architecture.

Names are those the original google-research/sam code accepts (`WideResnet28x10`,
`WideResnet28x6_ShakeShake`, `Pyramid_ShakeDrop`, `efficientnet-b7`, ...), plus
`WideResnet{depth}x{width}`, `Resnet{depth}` (and the standard `Resnet{depth}_v1.5`), the
vanilla PyramidNet, Vision Transformers `ViT-{Ti,S,B,L}_{patch}` and MLP-Mixers
`Mixer-{S,B,L}_{patch}` (the names of the published checkpoints), and small variants for
demos and tests (`*_mini`, `ViT-mini_{patch}`, `Mixer-mini_{patch}`). Every model is called as
`model.apply(variables, images_nhwc, train=bool, rngs=layers.train_rngs(key))`; its
stochastic parts (shake coefficients, ShakeDrop, stochastic depth, dropout) draw from
those streams.
"""

import functools
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.errors import UsageError

from sam_jax.models.efficientnet import VARIANTS, EfficientNet
from sam_jax.models.layers import conv_init
from sam_jax.models.mixer import MlpMixer
from sam_jax.models.pyramidnet import PyramidNet
from sam_jax.models.resnet import STAGES, CifarResNet, ResNet
from sam_jax.models.shake_shake import WideResnetShakeShake
from sam_jax.models.vit import VisionTransformer
from sam_jax.models.wide_resnet import WideResnet

_NAMED = {
    "WideResnet_mini": functools.partial(WideResnet, depth=16, width=1),
    "WideResnet28x6_ShakeShake": functools.partial(WideResnetShakeShake, 4, 6),
    "WideResnet_ShakeShake_mini": functools.partial(WideResnetShakeShake, 2, 1),
    "Pyramid_ShakeDrop": functools.partial(PyramidNet, 272, 200, shake_drop=True),
    "Pyramid_ShakeDrop_mini": functools.partial(PyramidNet, 11, 200, shake_drop=True),
    "Pyramid_vanilla": functools.partial(PyramidNet, 272, 200, shake_drop=False),
    "Pyramid_vanilla_mini": functools.partial(PyramidNet, 11, 200, shake_drop=False),
    # 7 one-block stages at 32x32: EfficientNet's structure at a size a CPU test can run.
    "efficientnet-mini": functools.partial(EfficientNet, 0.25, 0.25, 32, 0.2),
    **{
        name: functools.partial(EfficientNet, *args) for name, args in VARIANTS.items()
    },
}
_WIDE_RESNET = re.compile(r"WideResnet(\d+)x(\d+)$")
_RESNET = re.compile(r"Resnet(\d+)(_v1\.5)?$")
_VIT = re.compile(r"ViT-(Ti|S|B|L|mini)_(\d+)$")
_MIXER = re.compile(r"Mixer-(S|B|L|mini)_(\d+)$")
EXAMPLES = ("WideResnet28x10", "WideResnet28x6_ShakeShake", "Pyramid_ShakeDrop", "Pyramid_vanilla",
            "Resnet50", "Resnet32", "efficientnet-b0", "efficientnet-l2-475", "ViT-B_16",
            "Mixer-B_16")


def get_model(name: str, num_classes: int, dtype: Any = jnp.float32, **kwargs) -> nn.Module:
  """Builds the named model.

  Args:
    name: a registered name (see EXAMPLES), `WideResnet{6n+4}x{k}`, `Resnet{18,34,50,101,
      152,200}` (ImageNet, the paper's), `Resnet{...}_v1.5` (ImageNet, the standard v1.5;
      resnet.py says which is which) or `Resnet{6n+2}` (CIFAR, e.g. Resnet32).
    num_classes: size of the classifier output.
    dtype: computation dtype (parameters and BatchNorm statistics stay float32).
    **kwargs: module fields, e.g. `bn_axis_name` to synchronise BatchNorm.

  Raises:
    UsageError: for an unknown name, listing examples of known ones, or an option the
      family does not take.
  """
  kwargs = {"num_classes": num_classes, "dtype": dtype, **kwargs}
  try:
    return _build(name, kwargs)
  except TypeError as e:  # a field this family does not have
    raise UsageError(f"Model '{name}' does not take these options: {e}") from e


def _build(name: str, kwargs: dict[str, Any]) -> nn.Module:
  if name in _NAMED:
    return _NAMED[name](**kwargs)
  if (match := _WIDE_RESNET.match(name)) and (int(match[1]) - 4) % 6 == 0:
    return WideResnet(depth=int(match[1]), width=int(match[2]), **kwargs)
  if match := _RESNET.match(name):
    depth, standard = int(match[1]), bool(match[2])
    if depth in STAGES:
      variant = {"stem_relu": True, "kernel_init": conv_init} if standard else {}
      return ResNet(depth=depth, **variant, **kwargs)
    if (depth - 2) % 6 == 0 and not standard:
      return CifarResNet(depth=depth, **kwargs)
  if match := _VIT.match(name):
    return VisionTransformer(size=match[1], patch=int(match[2]), **kwargs)
  if match := _MIXER.match(name):
    return MlpMixer(size=match[1], patch=int(match[2]), **kwargs)
  raise UsageError(f"Unknown model '{name}': choose one of {', '.join(EXAMPLES)} (also "
                   "WideResnet{6n+4}x{k}, Resnet{18,34,50,101,152,200}[_v1.5], Resnet{6n+2}, "
                   "efficientnet-b0..b8, ViT-{Ti,S,B,L}_{patch}, Mixer-{S,B,L}_{patch}, "
                   "*_mini).")


def input_resolution(model: nn.Module) -> int | None:
  """The image side the model expects (EfficientNet), or None for the dataset's own."""
  return getattr(model, "resolution", None)
