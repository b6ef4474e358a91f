"""Reading the published checkpoint formats as flat {name: array} maps.

Each reader opens a checkpoint and returns (shapes, read, close): every variable name
with its shape, a function reading one variable by name, and a function releasing the
file. Formats: `tf` (tensorflow/tpu TF checkpoints; this reader imports TensorFlow, on
the CPU only), `flax` (the original SAM release's msgpack files), `keras`
(keras.applications `.h5` files; needs h5py), `orbax` (our converter's output) and `npz`
(google-research/vision_transformer's ViT and Mixer files).
"""

import os
import re
from collections.abc import Callable
from typing import Any

import flax.serialization
import flax.traverse_util
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from sam_jax.errors import UsageError

FORMATS = ("tf", "flax", "keras", "orbax", "npz")
Opened = tuple[dict[str, tuple[int, ...]], Callable[[str], Any], Callable[[], None]]


class CheckpointError(UsageError):
  """A checkpoint that cannot be read, or does not fit the model (one-line message)."""


def detect_format(path: str) -> str:
  """tf, flax, keras or orbax, from what is at `path`."""
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA")):
      return "orbax"
    if _tf_prefix(path):
      return "tf"
  elif path.endswith((".h5", ".hdf5")):
    return "keras"
  elif path.endswith(".npz") and os.path.isfile(path):
    return "npz"
  elif os.path.exists(path + ".index"):
    return "tf"
  elif os.path.isfile(path):
    return "flax"
  raise CheckpointError(
      f"No checkpoint at {path}: give a TF checkpoint (folder, or prefix with a .index "
      "file), an original SAM .msgpack file, a Keras .h5 file, a folder written by "
      "python -m sam_jax.pretrained or a ViT / Mixer .npz file (see checkpoints/README.md).")


def _tf_prefix(folder: str) -> str | None:
  """The checkpoint in a TF folder: the one its `checkpoint` file names, else the only one."""
  state = os.path.join(folder, "checkpoint")
  if os.path.exists(state):
    with open(state) as f:
      if match := re.search(r'^model_checkpoint_path: "(.*)"', f.read(), re.MULTILINE):
        return os.path.join(folder, match[1])
  prefixes = [name[:-len(".index")] for name in os.listdir(folder) if name.endswith(".index")]
  return os.path.join(folder, prefixes[0]) if len(prefixes) == 1 else None


def _read_tf(path: str) -> Opened:
  # TensorFlow only for this format (seconds to import), and never on a GPU.
  from sam_jax.data.tf_cpu import tf  # pylint: disable=import-outside-toplevel
  if os.path.isdir(path):
    path = _tf_prefix(path) or path
  reader = tf.train.load_checkpoint(path)
  return reader.get_variable_to_shape_map(), reader.get_tensor, lambda: None


def _read_flax(path: str) -> Opened:
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


def _read_keras(path: str) -> Opened:
  import h5py  # pylint: disable=import-outside-toplevel  (only this format needs it)
  f = h5py.File(path, "r")
  # Any: h5py is untyped, and the unions pyright infers from its code (a Datatype node, an
  # Empty attribute) do not fit a Keras file's groups and string arrays.
  root: Any = f["model_weights"] if "model_weights" in f else f
  if "layer_names" not in root.attrs:
    f.close()
    raise CheckpointError(
        f"{path} is not a Keras weight file by layer name (a Keras 3 .weights.h5 names "
        "layers by class): use the published keras.applications file or model.save('x.h5').")
  datasets = {}
  for layer in root.attrs["layer_names"]:
    layer = layer.decode() if isinstance(layer, bytes) else layer
    if re.fullmatch(r"normalization(_\d+)?", layer):  # ImageNet mean/variance: the pipeline's
      logging.info("%s: input normalisation layer skipped (the input pipeline normalises).", path)
      continue
    for weight in root[layer].attrs["weight_names"]:
      weight = weight.decode() if isinstance(weight, bytes) else weight
      leaf = weight.split("/")[-1].split(":")[0].replace("depthwise_kernel", "kernel")
      datasets[f"{layer}/{leaf}"] = root[layer][weight]
  return ({n: d.shape for n, d in datasets.items()}, lambda n: datasets[n][()], f.close)


def _read_orbax(path: str) -> Opened:
  tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))
  flat: dict[str, Any] = flax.traverse_util.flatten_dict(tree, sep="/")
  return {n: v.shape for n, v in flat.items()}, flat.__getitem__, lambda: None


def _read_npz(path: str) -> Opened:
  with np.load(path, allow_pickle=False) as arrays:
    flat = {name: arrays[name] for name in arrays.files}
  return {n: v.shape for n, v in flat.items()}, flat.__getitem__, lambda: None


_READERS = {
    "tf": _read_tf,
    "flax": _read_flax,
    "keras": _read_keras,
    "orbax": _read_orbax,
    "npz": _read_npz
}


def open_checkpoint(path: str, fmt: str) -> Opened:
  """(shapes, read, close) of the checkpoint at `path` in format `fmt`.

  A file that its library cannot read, at opening or at `read`, is a CheckpointError
  (truncated downloads are the usual cause); errors outside the file reads propagate.
  """
  if fmt not in FORMATS:
    raise CheckpointError(f"Unknown checkpoint format '{fmt}': choose {', '.join(FORMATS)}.")
  try:
    shapes, read, close = _READERS[fmt](path)
  except CheckpointError:
    raise
  except Exception as e:  # each library has its own errors for a bad file
    raise _unreadable(path, fmt, e) from e

  def checked_read(name: str) -> Any:
    try:
      return read(name)
    except Exception as e:  # noqa: BLE001  (as above: only the library's read is inside)
      raise _unreadable(path, fmt, e) from e

  return shapes, checked_read, close


def _unreadable(path: str, fmt: str, error: Exception) -> CheckpointError:
  lines = str(error).strip().splitlines()
  cause = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
  return CheckpointError(f"Could not read {path} as a {fmt} checkpoint ({cause}): is it "
                         "complete? Download it again.")
