"""Published EfficientNet weights -> this codebase's EfficientNet variables, and a converter.

Four formats are read, each into `{"params", "batch_stats"}` of `models.efficientnet`:

  tf     TensorFlow checkpoints of the official release (tensorflow/tpu, NoisyStudent
         included): `efficientnet-b0/blocks_3/depthwise_conv2d/depthwise_kernel`, ...,
         each with an `/ExponentialMovingAverage` copy, which is taken by default (where
         it exists, as TF's evaluation does); `use_ema=False` takes the raw variables.
  flax   the msgpack files released with the original SAM code (flax.nn): a tuple of
         (model, state), trees `Stem_0/...`, `MBConvBlock_{i+1}/...`, `Head_{n+1}/...`.
  keras  keras.applications EfficientNetB0-B7 weight files (`efficientnetb0.h5`, or any
         model saved by `model.save("x.h5")`): layers `stem_conv`, `block2a_dwconv`, ...
  orbax  a folder written by this module's converter (our own names).

Every checkpoint variable of the model must be used and every model variable found,
with the same shape; depthwise kernels are [k, k, C, 1] there and [k, k, 1, C] here.
The one exception: a classifier of another number of classes is replaced by the
model's freshly initialised head, and the log says so. Anything else raises a
`CheckpointError` naming the variables. Converter:

    python -m sam_jax.pretrained --from=noisy_student_efficientnet-l2_475 \\
        --model=efficientnet-l2-475 --to=checkpoints/efficientnet-l2-475
"""

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import numpy as np
from absl import logging

from sam_jax.models import efficientnet

FORMATS = ("tf", "flax", "keras", "orbax")
EMA = "/ExponentialMovingAverage"
# Training-only variables of the official checkpoints (optimizer slots, step counter).
_TRAINING_STATE = re.compile(r"(/RMSProp(_1)?|/Momentum|global_step)$")
_BN_LEAVES = {"scale": "gamma", "bias": "beta", "mean": "moving_mean",
              "var": "moving_variance"}


class CheckpointError(ValueError):
  """A checkpoint that cannot be read, or does not fit the model (one-line message)."""


# --------------------------------------------------------------------------- naming
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
  return {"depthwise_conv": "depthwise_conv2d", "se_reduce": "se/conv2d",
          "se_expand": "se/conv2d_1"}[layer]


def _flax_layer(layer: str, expands: bool) -> str:
  if layer.endswith("_bn"):
    return f"batch_normalization_{_bn_index(layer, expands)}"
  if layer in ("expand_conv", "project_conv"):
    return f"{layer[:-5]}_conv2d_{_conv_index(layer, expands)}"
  return {"depthwise_conv": "depthwise_conv2d", "se_reduce": "SqueezeExcite/reduce_conv2d_0",
          "se_expand": "SqueezeExcite/expand_conv2d_1"}[layer]


_KERAS_BLOCK_LAYERS = {"expand_conv": "expand_conv", "expand_bn": "expand_bn",
                       "depthwise_conv": "dwconv", "depthwise_bn": "bn",
                       "se_reduce": "se_reduce", "se_expand": "se_expand",
                       "project_conv": "project_conv", "project_bn": "project_bn"}
_OUTER = {  # our stem/head layer -> (tf, flax, keras) layer
    "stem_conv": ("stem/conv2d", "Stem_0/conv2d", "stem_conv"),
    "stem_bn": ("stem/tpu_batch_normalization", "Stem_0/batch_normalization", "stem_bn"),
    "head_conv": ("head/conv2d", "Head/conv2d", "top_conv"),
    "head_bn": ("head/tpu_batch_normalization", "Head/batch_normalization", "top_bn"),
    "head_dense": ("head/dense", "Head/dense", "predictions"),
}


def block_stages(model: efficientnet.EfficientNet) -> list[tuple[int, int]]:
  """(stage, repeat) of each of the model's blocks, in order."""
  return [(stage, repeat) for stage, (repeats, *_) in enumerate(efficientnet.STAGES)
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
    layer = {"tf": f"{prefix}/{tf_layer}", "keras": keras_layer,
             "flax": flax_layer.replace("Head", f"Head_{len(block_stages(model)) + 1}")}[fmt]
  if fmt == "flax":
    return f"{'state' if collection == 'batch_stats' else 'params'}/{layer}/{leaf}"
  return f"{layer}/{leaf}"


def _transposed(ours: str, fmt: str) -> bool:
  """Depthwise kernels are [k, k, C, 1] in the published formats, [k, k, 1, C] here."""
  return fmt != "orbax" and "/depthwise_conv/" in ours


def _from_source(ours: str, fmt: str, value: Any) -> Any:
  return value.swapaxes(-1, -2) if _transposed(ours, fmt) else value


def _source_shape(ours: str, fmt: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  return shape[:-2] + shape[-2:][::-1] if _transposed(ours, fmt) else tuple(shape)


# ----------------------------------------------------------------------- conversion
def _model_names(shapes: Mapping[str, Any], fmt: str, use_ema: bool
                 ) -> tuple[dict[str, str], str]:
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
  logging.info("TF checkpoint %s: %d model variables (%d from EMA copies); %d optimizer "
               "slots and counters not read.", prefix, len(names),
               sum(n != v for n, v in names.items()), training_state)
  return names, prefix


def guess_variant(num_blocks: int, stem_filters: int) -> str:
  """The variants with this many blocks and stem filters, e.g. 'efficientnet-b3'."""
  found = [name for name, (width, depth, *_) in efficientnet.VARIANTS.items()
           if efficientnet.round_filters(32, width) == stem_filters
           and sum(efficientnet.round_repeats(s[0], depth) for s in efficientnet.STAGES)
           == num_blocks]
  return " or ".join(found) or f"an unknown variant ({num_blocks} blocks, stem {stem_filters})"


_BLOCK_PATTERNS = {"tf": r"/blocks_(\d+)/", "flax": r"MBConvBlock_(\d+)/",
                   "keras": r"^block(\d[a-z]+)_", "orbax": r"/blocks_(\d+)/"}


def _describe(names: Mapping[str, str], shapes: Mapping[str, Any], fmt: str,
              model: Any, expands: set[int], prefix: str) -> str:
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
  ours = flax.traverse_util.flatten_dict(
      {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})},
      sep="/")
  names, prefix = _model_names(shapes, fmt, use_ema)
  expands = {int(name.split("/")[1][len("blocks_"):]) for name in ours
             if "/expand_conv/" in name}
  wanted = {name: source_name(name, fmt, model, expands, prefix) for name in ours}
  missing = sorted(theirs for theirs in wanted.values() if theirs not in names)
  misshapen = {name: (tuple(shapes[names[theirs]]), _source_shape(name, fmt, ours[name].shape))
               for name, theirs in wanted.items()
               if theirs in names and tuple(shapes[names[theirs]])
               != _source_shape(name, fmt, ours[name].shape)}
  fresh_head = _replaces_head(misshapen)
  if fresh_head:
    saved_classes = misshapen.pop("params/head_dense/bias")[0][0]
    del misshapen["params/head_dense/kernel"]
    logging.warning("%s has a %d-class classifier and the model %d classes: the head is "
                    "freshly initialised, everything else is loaded.", source, saved_classes,
                    ours["params/head_dense/bias"].shape[0])
  unexpected = sorted(set(names) - set(wanted.values()))
  if missing or unexpected or misshapen:
    problems = ([f"missing {n}" for n in missing] + [f"unexpected {n}" for n in unexpected]
                + [f"{wanted[n]} is {a} where the model needs {b}"
                   for n, (a, b) in sorted(misshapen.items())])
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5
                                       else "")
    raise CheckpointError(
        f"{source} ({fmt}) does not fit {_model_name(model)}: {len(problems)} variables do "
        f"not match ({shown}){_describe(names, shapes, fmt, model, expands, prefix)}.")
  loaded = {name: (ours[name] if fresh_head and name.startswith("params/head_dense/")
                   else _from_source(name, fmt, read(names[wanted[name]])))
            for name in ours}
  return flax.traverse_util.unflatten_dict(loaded, sep="/")


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


# -------------------------------------------------------------------------- reading
def detect_format(path: str) -> str:
  """tf, flax, keras or orbax, from what is at `path`."""
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA")):
      return "orbax"
    if _tf_prefix(path):
      return "tf"
  elif path.endswith((".h5", ".hdf5")):
    return "keras"
  elif os.path.exists(path + ".index"):
    return "tf"
  elif os.path.isfile(path):
    return "flax"
  raise CheckpointError(
      f"No checkpoint at {path}: give a TF checkpoint (folder, or prefix with a .index "
      "file), an original SAM .msgpack file, a Keras .h5 file or a folder written by "
      "python -m sam_jax.pretrained (see checkpoints/README.md).")


def _tf_prefix(folder: str) -> str | None:
  """The checkpoint in a TF folder: the one its `checkpoint` file names, else the only one."""
  state = os.path.join(folder, "checkpoint")
  if os.path.exists(state):
    with open(state) as f:
      if match := re.search(r'^model_checkpoint_path: "(.*)"', f.read(), re.MULTILINE):
        return os.path.join(folder, match[1])
  prefixes = [name[:-len(".index")] for name in os.listdir(folder) if name.endswith(".index")]
  return os.path.join(folder, prefixes[0]) if len(prefixes) == 1 else None


def _read_tf(path: str):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  if os.path.isdir(path):
    path = _tf_prefix(path) or path
  reader = tf.train.load_checkpoint(path)
  return reader.get_variable_to_shape_map(), reader.get_tensor, lambda: None


def _read_flax(path: str):
  with open(path, "rb") as f:
    tree = flax.serialization.msgpack_restore(f.read())
  if not isinstance(tree, dict) or set(tree) != {"0", "1"}:
    raise CheckpointError(f"{path} is a msgpack file but not the original SAM's "
                          "(model, state) pair: expected top-level keys '0' and '1'.")
  model, state = tree["0"], tree["1"]
  model = model.get("params", model) if set(model) == {"params"} else model
  state = state.get("state", state) if set(state) == {"state"} else state
  flat = {}
  for collection, subtree in (("params", model), ("state", state)):
    for name, value in flax.traverse_util.flatten_dict(subtree, sep="/").items():
      name = re.sub(r"SqueezeExcite_\d+", "SqueezeExcite", name.strip("/"))
      flat[f"{collection}/{name}"] = np.asarray(value)
  return {n: v.shape for n, v in flat.items()}, flat.__getitem__, lambda: None


def _read_keras(path: str):
  import h5py  # pylint: disable=import-outside-toplevel
  f = h5py.File(path, "r")
  root = f["model_weights"] if "model_weights" in f else f
  if "layer_names" not in root.attrs:
    f.close()
    raise CheckpointError(
        f"{path} is not a Keras weight file by layer name (a Keras 3 .weights.h5 names "
        "layers by class): use the published keras.applications file or model.save('x.h5').")
  datasets = {}
  for layer in root.attrs["layer_names"]:
    layer = layer.decode() if isinstance(layer, bytes) else layer
    if re.fullmatch(r"normalization(_\d+)?", layer):  # the input's ImageNet mean/variance: our pipeline's job
      logging.info("%s: input normalisation layer skipped (the input pipeline normalises).",
                   path)
      continue
    for weight in root[layer].attrs["weight_names"]:
      weight = weight.decode() if isinstance(weight, bytes) else weight
      leaf = weight.split("/")[-1].split(":")[0].replace("depthwise_kernel", "kernel")
      datasets[f"{layer}/{leaf}"] = root[layer][weight]
  return ({n: d.shape for n, d in datasets.items()}, lambda n: datasets[n][()], f.close)


def _read_orbax(path: str):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))
  flat = flax.traverse_util.flatten_dict(tree, sep="/")
  return {n: v.shape for n, v in flat.items()}, flat.__getitem__, lambda: None


_READERS = {"tf": _read_tf, "flax": _read_flax, "keras": _read_keras, "orbax": _read_orbax}


def load(path: str, model: efficientnet.EfficientNet, variables: Any, *, fmt: str | None = None,
         use_ema: bool = True) -> Any:
  """`variables` (the model's fresh init) with everything loaded from the checkpoint `path`.

  Everything is read and checked before this returns; nothing is written.

  Raises:
    CheckpointError: the file is missing, truncated or unreadable, or does not fit.
  """
  fmt = fmt or detect_format(path)
  if fmt not in FORMATS:
    raise CheckpointError(f"Unknown checkpoint format '{fmt}': choose {', '.join(FORMATS)}.")
  try:
    shapes, read, close = _READERS[fmt](path)
  except CheckpointError:
    raise
  except Exception as e:  # each library has its own errors for a bad file
    raise CheckpointError(f"Could not read {path} as a {fmt} checkpoint ({_first_line(e)}): "
                          "is it complete? Download it again.") from e
  try:
    return convert(shapes, read, variables, model, fmt, use_ema=use_ema, source=path)
  except CheckpointError:
    raise
  except Exception as e:
    raise CheckpointError(f"Could not read {path} as a {fmt} checkpoint ({_first_line(e)}): "
                          "is it complete? Download it again.") from e
  finally:
    close()


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def input_and_classes(path: str, model_name: str, *, fmt: str | None = None
                      ) -> tuple[int, int]:
  """(input channels, classes) of a checkpoint: its stem's input and classifier's output."""
  fmt = fmt or detect_format(path)
  model = efficientnet_model(model_name, 1)
  shapes, _, close = _READERS[fmt](path)
  close()
  names, prefix = _model_names(shapes, fmt, use_ema=False)
  stem, bias = (source_name(f"params/{name}", fmt, model, set(), prefix)
                for name in ("stem_conv/kernel", "head_dense/bias"))
  if stem not in names or bias not in names:
    raise CheckpointError(f"{path} has no {stem if stem not in names else bias}: is it an "
                          f"EfficientNet checkpoint in the {fmt} format?")
  return int(shapes[stem][-2]), int(shapes[bias][0])


def efficientnet_model(model_name: str, num_classes: int) -> efficientnet.EfficientNet:
  """Our EfficientNet called `model_name`, or a CheckpointError for another model."""
  from sam_jax.models import get_model  # pylint: disable=import-outside-toplevel
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
  """Converts a published checkpoint to an Orbax folder `to` (with its own classifier).

  Everything is read and checked before the folder is written.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  to = os.path.abspath(to)
  if os.path.exists(to):
    raise CheckpointError(f"{to} exists already: give --to a new folder.")
  channels, classes = input_and_classes(source, model_name, fmt=fmt)
  model = efficientnet_model(model_name, classes)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init_shapes(model, channels))
  variables = load(source, model, zeros, fmt=fmt, use_ema=use_ema)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(to, variables)
  checkpointer.wait_until_finished()
  return variables


def main(argv):
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  args = flags.FLAGS
  variables = convert_to_orbax(args["from"].value, args.model, args.to, fmt=args.format,
                               use_ema=args.ema)
  count = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  print(f"Wrote {args.model} ({count:,} parameters, "
        f"{variables['params']['head_dense']['bias'].shape[0]} classes) to "
        f"{os.path.abspath(args.to)}; finetune with --config.init_from={args.to}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=ungrouped-imports
  flags.DEFINE_string("from", None, "The published checkpoint (see checkpoints/README.md).",
                      required=True)
  flags.DEFINE_string("to", None, "New folder for the converted Orbax checkpoint.",
                      required=True)
  flags.DEFINE_string("model", None, "Our model name, e.g. efficientnet-b7.", required=True)
  flags.DEFINE_enum("format", None, list(FORMATS), "Checkpoint format (default: detected).")
  flags.DEFINE_bool("ema", True, "TF checkpoints: the ExponentialMovingAverage copies.")

  def _main(argv):
    try:
      main(argv)
    except CheckpointError as e:
      raise SystemExit(f"sam_jax.pretrained: error: {e}") from None
  app.run(_main)
