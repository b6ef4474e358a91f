"""Where each variable of our EfficientNet lives in the published checkpoint formats.

`source_name("params/blocks_3/depthwise_conv/kernel", fmt, ...)` gives its name in a
tensorflow/tpu TF checkpoint (`efficientnet-b0/blocks_3/depthwise_conv2d/depthwise_kernel`),
in the original SAM release's Flax msgpack (`params/MBConvBlock_4/depthwise_conv2d/...`),
in a keras.applications file (`block2b_dwconv/kernel`) or in our own Orbax export (itself).
Every variable has the same shape in each format: depthwise kernels are [k, k, C, 1].
"""

from sam_jax.models import efficientnet

_BN_LEAVES = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}


def _bn_index(layer: str, expands: bool) -> int:
  """Index of a block's BatchNorm in creation order: expand, depthwise, project."""
  return ("expand_bn", "depthwise_bn", "project_bn").index(layer) - (0 if expands else 1)


def _conv_index(layer: str, expands: bool) -> int:
  return ("expand_conv", "project_conv").index(layer) - (0 if expands else 1)


def _tf_layer(layer: str, expands: bool) -> str:
  if layer.endswith("_bn"):
    index = _bn_index(layer, expands)
    return "tpu_batch_normalization" + (f"_{index}" if index else "")
  if layer in ("expand_conv", "project_conv"):
    index = _conv_index(layer, expands)
    return "conv2d" + (f"_{index}" if index else "")
  return {
      "depthwise_conv": "depthwise_conv2d",
      "se_reduce": "se/conv2d",
      "se_expand": "se/conv2d_1"
  }[layer]


def _flax_layer(layer: str, expands: bool) -> str:
  if layer.endswith("_bn"):
    return f"batch_normalization_{_bn_index(layer, expands)}"
  if layer in ("expand_conv", "project_conv"):
    return f"{layer[:-5]}_conv2d_{_conv_index(layer, expands)}"
  return {
      "depthwise_conv": "depthwise_conv2d",
      "se_reduce": "SqueezeExcite/reduce_conv2d_0",
      "se_expand": "SqueezeExcite/expand_conv2d_1"
  }[layer]


_KERAS_BLOCK_LAYERS = {
    "expand_conv": "expand_conv",
    "expand_bn": "expand_bn",
    "depthwise_conv": "dwconv",
    "depthwise_bn": "bn",
    "se_reduce": "se_reduce",
    "se_expand": "se_expand",
    "project_conv": "project_conv",
    "project_bn": "project_bn"
}
_OUTER = {  # our stem/head layer -> (tf, flax, keras) layer
    "stem_conv": ("stem/conv2d", "Stem_0/conv2d", "stem_conv"),
    "stem_bn": ("stem/tpu_batch_normalization", "Stem_0/batch_normalization", "stem_bn"),
    "head_conv": ("head/conv2d", "Head/conv2d", "top_conv"),
    "head_bn": ("head/tpu_batch_normalization", "Head/batch_normalization", "top_bn"),
    "head_dense": ("head/dense", "Head/dense", "predictions"),
}


def block_stages(model: efficientnet.EfficientNet) -> list[tuple[int, int]]:
  """(stage, repeat) of each of the model's blocks, in order."""
  return [(stage, repeat)
          for stage, (repeats, *_) in enumerate(efficientnet.STAGES)
          for repeat in range(efficientnet.round_repeats(repeats, model.depth))]


def source_name(ours: str, fmt: str, model: efficientnet.EfficientNet, expands: set[int],
                prefix: str = "") -> str:
  """The checkpoint's name of our variable `ours` ("params/blocks_3/depthwise_conv/kernel").

  `expands` holds the blocks that have an expansion conv (it shifts TF's and the
  original Flax's layer numbering); `prefix` is the TF scope, e.g. "efficientnet-b0".
  """
  if fmt == "orbax":
    return ours
  collection, *layers, leaf = ours.split("/")
  if layers[-1].endswith("_bn"):
    leaf = leaf if fmt == "flax" else _BN_LEAVES[leaf]
  elif layers[-1] == "depthwise_conv":
    leaf = "depthwise_kernel" if fmt in ("tf", "flax") else "kernel"
  if layers[0].startswith("blocks_"):
    index = int(layers[0][len("blocks_"):])
    expands_here = index in expands
    if fmt == "tf":
      layer = f"{prefix}/blocks_{index}/{_tf_layer(layers[1], expands_here)}"
    elif fmt == "flax":
      layer = f"MBConvBlock_{index + 1}/{_flax_layer(layers[1], expands_here)}"
    else:
      stage, repeat = block_stages(model)[index]
      layer = f"block{stage + 1}{chr(ord('a') + repeat)}_{_KERAS_BLOCK_LAYERS[layers[1]]}"
  else:
    tf_layer, flax_layer, keras_layer = _OUTER[layers[0]]
    layer = {
        "tf": f"{prefix}/{tf_layer}",
        "keras": keras_layer,
        "flax": flax_layer.replace("Head", f"Head_{len(block_stages(model)) + 1}")
    }[fmt]
  if fmt == "flax":
    return f"{'state' if collection == 'batch_stats' else 'params'}/{layer}/{leaf}"
  return f"{layer}/{leaf}"
