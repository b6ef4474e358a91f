"""Published weights -> this codebase's EfficientNet (and, by `transformers`, ViT and Mixer)
variables.

`load(path, model, variables)` reads a checkpoint in any of `readers.FORMATS` and checks
it name by name against the model: every checkpoint variable of the model must be used
and every model variable found, with the same shape. The one exception: a classifier of
another number of classes is replaced by the model's freshly initialised head, and the
log says so. Anything else raises a `CheckpointError` naming the variables (and, for
another variant, which one the checkpoint looks like). `convert_to_orbax` writes the
result as an Orbax folder that `init_from` reads fast.
"""

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from sam_jax.models import efficientnet, get_model
from sam_jax.models.mixer import MlpMixer
from sam_jax.models.vit import VisionTransformer
from sam_jax.pretrained import transformers
from sam_jax.pretrained.names import source_name
from sam_jax.pretrained.readers import CheckpointError, detect_format, open_checkpoint

EMA = "/ExponentialMovingAverage"
# Training-only variables of the official checkpoints (optimizer slots, step counter).
_TRAINING_STATE = re.compile(r"(/RMSProp(_1)?|/Momentum|global_step)$")


def _model_names(shapes: Mapping[str, Any], fmt: str, use_ema: bool) -> tuple[dict[str, str], str]:
  """Checkpoint model variables -> the name to read each from, and the TF scope.

  TF: training state is left out, and each variable is read from its EMA copy when
  `use_ema` and the copy exists (tf.train.ExponentialMovingAverage.variables_to_restore).
  """
  if fmt != "tf":
    return {name: name for name in shapes}, ""
  scopes = {name.split("/")[0] for name in shapes if "/stem/" in name}
  if len(scopes) != 1:
    raise CheckpointError(f"Expected one EfficientNet scope with a stem in the TF checkpoint, "
                          f"found {sorted(scopes) or 'none'}.")
  prefix = scopes.pop()
  names, training_state = {}, 0
  for name in shapes:
    if _TRAINING_STATE.search(name):
      training_state += 1
    elif name.startswith(prefix + "/") and not name.endswith(EMA):
      names[name] = name + EMA if use_ema and name + EMA in shapes else name
  logging.info(
      "TF checkpoint %s: %d model variables (%d from EMA copies); %d optimizer "
      "slots and counters not read.", prefix, len(names), sum(n != v for n, v in names.items()),
      training_state)
  return names, prefix


def guess_variant(num_blocks: int, stem_filters: int) -> str:
  """The variants with this many blocks and stem filters, e.g. 'efficientnet-b3'."""
  found = [
      name for name, (width, depth, *_) in efficientnet.VARIANTS.items()
      if efficientnet.round_filters(32, width) == stem_filters and sum(
          efficientnet.round_repeats(s[0], depth) for s in efficientnet.STAGES) == num_blocks
  ]
  return " or ".join(found) or f"an unknown variant ({num_blocks} blocks, stem {stem_filters})"


_BLOCK_PATTERNS = {
    "tf": r"/blocks_(\d+)/",
    "flax": r"MBConvBlock_(\d+)/",
    "keras": r"^block(\d[a-z]+)_",
    "orbax": r"/blocks_(\d+)/"
}


def _describe(names: Mapping[str, str], shapes: Mapping[str, Any], fmt: str, model: Any,
              expands: set[int], prefix: str) -> str:
  """What the checkpoint looks like, to name the variant it was trained as."""
  blocks = {m[1] for name in names if (m := re.search(_BLOCK_PATTERNS[fmt], name))}
  stem = source_name("params/stem_conv/kernel", fmt, model, expands, prefix)
  if stem not in names:
    return ""
  return f"; the checkpoint looks like {guess_variant(len(blocks), shapes[names[stem]][-1])}"


def convert(shapes: Mapping[str, tuple[int, ...]], read: Callable[[str], Any], variables: Any,
            model: efficientnet.EfficientNet, fmt: str, *, use_ema: bool = True,
            source: str = "the checkpoint") -> Any:
  """Our `variables` with every array taken from a checkpoint.

  Args:
    shapes: every variable name in the checkpoint -> its shape.
    read: name -> its value (numpy, or a tracer under `jax.eval_shape`).
    variables: the model's freshly initialised `{"params", "batch_stats"}` (arrays or
      ShapeDtypeStructs); only a replaced classifier head keeps its values.
    model: the EfficientNet the variables belong to.
    fmt: one of FORMATS.
    use_ema: TF checkpoints: the ExponentialMovingAverage copies (else the raw ones).
    source: how to call the checkpoint in messages.

  Raises:
    CheckpointError: naming the missing, unexpected and misshapen variables.
  """
  ours: dict[str, Any] = flax.traverse_util.flatten_dict(
      {
          "params": variables["params"],
          "batch_stats": variables.get("batch_stats", {})
      }, sep="/")
  names, prefix = _model_names(shapes, fmt, use_ema)
  expands = {int(name.split("/")[1][len("blocks_"):]) for name in ours if "/expand_conv/" in name}
  wanted = {name: source_name(name, fmt, model, expands, prefix) for name in ours}
  missing = sorted(theirs for theirs in wanted.values() if theirs not in names)
  misshapen = {
      name: (tuple(shapes[names[theirs]]), tuple(ours[name].shape))
      for name, theirs in wanted.items()
      if theirs in names and tuple(shapes[names[theirs]]) != tuple(ours[name].shape)
  }
  _check_channels(source, misshapen.get("params/stem_conv/kernel"))
  fresh_head = _replaces_head(misshapen)
  if fresh_head:
    saved_classes = misshapen.pop("params/head_dense/bias")[0][0]
    del misshapen["params/head_dense/kernel"]
    logging.warning(
        "%s has a %d-class classifier and the model %d classes: the head is "
        "freshly initialised, everything else is loaded.", source, saved_classes,
        ours["params/head_dense/bias"].shape[0])
  unexpected = sorted(set(names) - set(wanted.values()))
  if missing or unexpected or misshapen:
    problems = ([f"missing {n}" for n in missing] + [f"unexpected {n}" for n in unexpected] + [
        f"{wanted[n]} is {a} where the model needs {b}" for n, (a, b) in sorted(misshapen.items())
    ])
    shown = "; ".join(
        problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    raise CheckpointError(
        f"{source} ({fmt}) does not fit {_model_name(model)}: {len(problems)} variables do "
        f"not match ({shown}){_describe(names, shapes, fmt, model, expands, prefix)}.")
  loaded = {
      name: (ours[name] if fresh_head and name.startswith("params/head_dense/") else read(
          names[wanted[name]])) for name in ours
  }
  return flax.traverse_util.unflatten_dict(loaded, sep="/")


def _check_channels(source: str, stem: tuple | None) -> None:
  """Raises when the checkpoint's stem takes images of another number of channels (an RGB
  checkpoint finetuned on grayscale data, say).

  Raises:
    CheckpointError: naming both numbers of channels.
  """
  if stem is None:
    return
  (saved, needed) = stem
  if saved[:2] + saved[3:] == needed[:2] + needed[3:] and saved[2] != needed[2]:
    raise CheckpointError(
        f"{source} was trained on {saved[2]}-channel images and this dataset's have "
        f"{needed[2]} (its stem convolution is {saved}, the model's {needed}): finetune it on "
        f"a dataset of {saved[2]}-channel images (CIFAR, ImageNet and the finetuning sets are "
        "RGB; the digits and Fashion-MNIST are grayscale).")


def _replaces_head(misshapen: dict[str, tuple]) -> bool:
  """True when only the classifier differs, and only in its number of classes."""
  if set(misshapen) != {"params/head_dense/kernel", "params/head_dense/bias"}:
    return False
  (saved, needed) = misshapen["params/head_dense/kernel"]
  return saved[0] == needed[0]


def _model_name(model: Any) -> str:
  for name, (width, depth, resolution, _) in efficientnet.VARIANTS.items():
    if (width, depth, resolution) == (model.width, model.depth, model.resolution):
      return name
  return f"EfficientNet(width={model.width}, depth={model.depth})"


def check_family(path: str, model: Any, fmt: str | None = None) -> str:
  """The checkpoint's format, once it is known to hold the model's family: EfficientNets
  from the tf, flax, keras and orbax formats, ViTs and Mixers from npz files and Orbax
  folders (the converter's; which family an Orbax folder holds, its names tell).

  Raises:
    CheckpointError: no checkpoint there, or one of another family.
  """
  if not isinstance(model, (efficientnet.EfficientNet, VisionTransformer, MlpMixer)):
    raise CheckpointError(f"init_from loads EfficientNet, ViT and Mixer checkpoints; "
                          f"{type(model).__name__} is none of them (choose efficientnet-b0..b8, "
                          "-l2, -l2-475, ViT-* or Mixer-*).")
  fmt = fmt or detect_format(path)
  transformer = isinstance(model, (VisionTransformer, MlpMixer))
  if fmt != "orbax" and transformer != (fmt == "npz"):  # an Orbax folder holds either
    raise CheckpointError(
        f"{path} ({fmt}) holds {'a ViT or Mixer' if fmt == 'npz' else 'an EfficientNet'} and the "
        f"model is {type(model).__name__}: EfficientNets load the tf, flax, keras and orbax "
        "formats, ViT-* and Mixer-* models vision_transformer's .npz files and our converter's "
        "Orbax folders.")
  return fmt


def load(path: str, model: Any, variables: Any, *, fmt: str | None = None,
         use_ema: bool = True) -> Any:
  """`variables` (the model's fresh init) with everything loaded from the checkpoint `path`.

  Everything is read and checked before this returns; nothing is written.

  Raises:
    CheckpointError: the file is missing, truncated or unreadable, or does not fit.
  """
  fmt = check_family(path, model, fmt)
  shapes, read, close = open_checkpoint(path, fmt)
  try:
    if isinstance(model, (VisionTransformer, MlpMixer)):
      if fmt == "orbax":  # our names: those of the file's "params" as an npz names them
        shapes = {n.removeprefix("params/"): v for n, v in shapes.items()}
        read = lambda name, read=read: read(f"params/{name}")
      return transformers.convert(shapes, read, variables, model, source=path)
    return convert(shapes, read, variables, model, fmt, use_ema=use_ema, source=path)
  finally:
    close()


def input_and_classes(path: str, model_name: str, *, fmt: str | None = None) -> tuple[int, int]:
  """(input channels, classes) of a checkpoint: its stem's input and classifier's output."""
  fmt = fmt or detect_format(path)
  model = efficientnet_model(model_name, 1)
  shapes, _, close = open_checkpoint(path, fmt)
  close()
  names, prefix = _model_names(shapes, fmt, use_ema=False)
  stem, bias = (
      source_name(f"params/{name}", fmt, model, set(), prefix)
      for name in ("stem_conv/kernel", "head_dense/bias"))
  if stem not in names or bias not in names:
    raise CheckpointError(f"{path} has no {stem if stem not in names else bias}: is it an "
                          f"EfficientNet checkpoint in the {fmt} format?")
  return int(shapes[stem][-2]), int(shapes[bias][0])


def efficientnet_model(model_name: str, num_classes: int) -> efficientnet.EfficientNet:
  """Our EfficientNet called `model_name`, or a CheckpointError for another model."""
  model = get_model(model_name, num_classes)
  if not isinstance(model, efficientnet.EfficientNet):
    raise CheckpointError(f"Pretrained checkpoints are EfficientNets; {model_name} is not one "
                          "(choose efficientnet-b0..b8, -l2 or -l2-475).")
  return model


def init_shapes(model: efficientnet.EfficientNet, channels: int = 3) -> Any:
  """The model's variables as ShapeDtypeStructs (no compute)."""
  images = jax.ShapeDtypeStruct((1, model.resolution, model.resolution, channels), np.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def convert_to_orbax(source: str, model_name: str, to: str, *, fmt: str | None = None,
                     use_ema: bool = True) -> Any:
  """Converts a published checkpoint to an Orbax folder `to` (with its own classifier): an
  EfficientNet, or a ViT or Mixer `.npz` (at the resolution it was trained at).

  Everything is read and checked before the folder is written.
  """
  to = os.path.abspath(to)
  if os.path.exists(to):
    raise CheckpointError(f"{to} exists already: give --to a new folder.")
  if (fmt or detect_format(source)) == "npz":  # a ViT or a Mixer, at its own resolution
    shapes, _, close = open_checkpoint(source, "npz")
    close()
    model, side = transformers.model_and_resolution(shapes, model_name)
    channels, shape = 3, jax.ShapeDtypeStruct((1, side, side, 3), np.float32)
    fresh = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), shape)
  else:
    channels, classes = input_and_classes(source, model_name, fmt=fmt)
    model = efficientnet_model(model_name, classes)
    fresh = init_shapes(model, channels)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), fresh)
  variables = load(source, model, zeros, fmt=fmt, use_ema=use_ema)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(to, variables)
  checkpointer.wait_until_finished()
  return variables
