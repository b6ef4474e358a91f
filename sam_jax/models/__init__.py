"""Model registry: `get_model(name, num_classes, dtype)` for every architecture.

Names are those the original google-research/sam code accepts (`WideResnet28x10`, ...)
plus any `WideResnet{depth}x{width}` and small variants for demos and tests.
"""

import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam_jax.models.wide_resnet import WideResnet

_WIDE_RESNET = re.compile(r"WideResnet(\d+)x(\d+)$")
_NAMED = {
    "WideResnet_mini": dict(depth=10, width=1),  # 3 blocks, widths 16/32/64
}
EXAMPLES = ("WideResnet28x10", "WideResnet16x4", "WideResnet_mini")


def get_model(name: str, num_classes: int, dtype: Any = jnp.float32, **kwargs) -> nn.Module:
  """Builds the named model, called as `model.apply(variables, images, train=...)`.

  Args:
    name: a registered name, e.g. "WideResnet28x10" or "WideResnet16x4".
    num_classes: size of the classifier output.
    dtype: computation dtype (parameters and BatchNorm statistics stay float32).
    **kwargs: passed to the module, e.g. `bn_axis_name` to synchronise BatchNorm.

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  if name in _NAMED:
    return WideResnet(num_classes=num_classes, dtype=dtype, **_NAMED[name], **kwargs)
  match = _WIDE_RESNET.match(name)
  if match and (int(match[1]) - 4) % 6 == 0:
    return WideResnet(depth=int(match[1]), width=int(match[2]), num_classes=num_classes,
                      dtype=dtype, **kwargs)
  raise ValueError(f"Unknown model '{name}': choose one of {', '.join(EXAMPLES)} "
                   "(or WideResnet{{depth}}x{{width}} with depth = 6n+4).")
