"""Published EfficientNet checkpoints load into our EfficientNet and give Keras' logits.

The oracle is keras.applications' EfficientNet, an independent implementation, built
with random weights. The test saves it in each published format (renaming Keras layers
to the tensorflow/tpu and original-SAM names), loads it through `sam_jax.pretrained` and
compares the logits in eval mode.
"""

import functools
import os
import re
import shutil

import flax
import jax
import jax.numpy as jnp
import keras
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import run_binary, tiny_config
from sam_jax import loop, pretrained
from sam_jax.data.tf_cpu import tf  # TF (and Keras on it) on the CPU only
from sam_jax.errors import UsageError
from sam_jax.models import efficientnet, get_model

SIDE = 64  # even at every stride-2 stage, where Keras' explicit padding equals SAME
# Keras block sub-layer -> tensorflow/tpu layer, (with, without) an expansion conv.
TF_BLOCK = {
    "expand_conv": ("conv2d",),
    "expand_bn": ("tpu_batch_normalization",),
    "dwconv": ("depthwise_conv2d",) * 2,
    "bn": ("tpu_batch_normalization_1", "tpu_batch_normalization"),
    "se_reduce": ("se/conv2d",) * 2,
    "se_expand": ("se/conv2d_1",) * 2,
    "project_conv": ("conv2d_1", "conv2d"),
    "project_bn": ("tpu_batch_normalization_2", "tpu_batch_normalization_1")
}
TF_OUTER = {
    "stem_conv": "stem/conv2d",
    "stem_bn": "stem/tpu_batch_normalization",
    "top_conv": "head/conv2d",
    "top_bn": "head/tpu_batch_normalization",
    "predictions": "head/dense"
}
TF_LEAF = {
    "kernel": "kernel",
    "bias": "bias",
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "moving_mean",
    "moving_variance": "moving_variance"
}
# Keras block sub-layer -> original SAM (flax.nn) module.
FLAX_BLOCK = {
    "expand_conv": ("expand_conv2d_0",),
    "expand_bn": ("batch_normalization_0",),
    "dwconv": ("depthwise_conv2d",) * 2,
    "bn": ("batch_normalization_1", "batch_normalization_0"),
    "se_reduce": ("SqueezeExcite_0/reduce_conv2d_0",) * 2,
    "se_expand": ("SqueezeExcite_0/expand_conv2d_1",) * 2,
    "project_conv": ("project_conv2d_1", "project_conv2d_0"),
    "project_bn": ("batch_normalization_2", "batch_normalization_1")
}
FLAX_LEAF = {
    "kernel": "kernel",
    "bias": "bias",
    "gamma": "scale",
    "beta": "bias",
    "moving_mean": "mean",
    "moving_variance": "var"
}


def keras_model(variant: str, classes: int = 10):
  """keras.applications' EfficientNet with random weights and BatchNorm statistics."""
  builder = getattr(keras.applications, f"EfficientNet{variant.upper()}")
  model = builder(weights=None, input_shape=(SIDE, SIDE, 3), classes=classes,
                  classifier_activation=None)
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      size = layer.gamma.shape
      layer.set_weights([
          rng.uniform(0.5, 1.5, size),
          rng.normal(0, 0.2, size),
          rng.normal(0, 0.2, size),
          rng.uniform(0.5, 1.5, size)
      ])
    elif isinstance(layer, keras.layers.Normalization):  # we feed normalised input
      layer.set_weights([np.zeros(3), np.ones(3), np.zeros(())])
    elif layer.weights:  # conv kernels keep their init; biases become non-zero
      layer.set_weights(
          [w + rng.normal(0, 0.05, w.shape) if w.ndim == 1 else w for w in layer.get_weights()])
  return model


def keras_weights(model) -> dict[tuple[str, str], np.ndarray]:
  """(layer, leaf) -> value of every weight of the Keras EfficientNet's layers."""
  return {
      (layer.name, w.path.split("/")[-1]): np.asarray(w.numpy()) for layer in model.layers
      if not isinstance(layer, keras.layers.Normalization) for w in layer.weights
  }


def official_name(layer: str, leaf: str, blocks: list[str], expands: set[str], table: dict,
                  outer: dict, leaves: dict) -> str:
  """A Keras (layer, leaf) under another release's names; blocks count from 0."""
  if match := re.match(r"(block\d[a-z])_(.*)", layer):
    block, sub = match.groups()
    index = blocks.index(block)
    return index, table[sub][0 if block in expands else 1], leaves[leaf]
  return None, outer[layer], leaves[leaf]


def block_list(weights):
  blocks = sorted({m[1] for (layer, _) in weights if (m := re.match(r"(block\d[a-z])_", layer))})
  expands = {
      m[1] for (layer, _) in weights if (m := re.match(r"(block\d[a-z])_expand_conv", layer))
  }
  return blocks, expands


def tf_names(weights, scope: str) -> dict[str, np.ndarray]:
  blocks, expands = block_list(weights)
  named = {}
  for (layer, leaf), value in weights.items():
    index, module, leaf = official_name(layer, leaf, blocks, expands, TF_BLOCK, TF_OUTER, TF_LEAF)
    if module == "depthwise_conv2d":
      leaf = "depthwise_kernel"
    named[f"{scope}/{module}/{leaf}" if index is
          None else f"{scope}/blocks_{index}/{module}/{leaf}"] = value
  return named


def write_tf_checkpoint(prefix: str, variables: dict[str, np.ndarray]) -> str:
  """A name-based TF checkpoint, the format of the official release."""
  names = sorted(variables)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(variables[n]) for n in names])
  return prefix


def official_tf(weights, scope: str, raw_offset: float = 0.5) -> dict[str, np.ndarray]:
  """EMA copies hold the Keras weights, raw ones are shifted; plus training state."""
  ema = tf_names(weights, scope)
  variables = {f"{name}/ExponentialMovingAverage": value for name, value in ema.items()}
  variables.update({name: value + raw_offset for name, value in ema.items()})
  variables.update({f"{name}/RMSProp": np.zeros_like(v) for name, v in ema.items()})
  variables["global_step"] = np.array(1000, np.int64)
  return variables


def original_flax_tree(weights) -> dict:
  """The original SAM release's (model, state) pair as flax.nn serialised it."""
  blocks, expands = block_list(weights)
  params, state = {}, {}
  for (layer, leaf), value in weights.items():
    index, module, name = official_name(layer, leaf, blocks, expands, FLAX_BLOCK, {
        k: v.split("/")[1] for k, v in TF_OUTER.items()
    }, FLAX_LEAF)
    if index is None:
      top = "Stem_0" if layer.startswith("stem") else f"Head_{len(blocks) + 1}"
      module = {"tpu_batch_normalization": "batch_normalization"}.get(module, module)
    else:
      top = f"MBConvBlock_{index + 1}"
    if module == "depthwise_conv2d":
      name = "depthwise_kernel"
    if name in ("mean", "var"):
      state.setdefault(f"/{top}/{module}", {})[name] = value
    else:
      node = params.setdefault(top, {})
      for part in module.split("/"):
        node = node.setdefault(part, {})
      node[name] = value
  return {"0": {"params": params}, "1": state}


@functools.cache
def efficientnet_and_variables(variant: str, classes: int = 10):
  """Our EfficientNet and its fresh variables (computed once per variant and classes)."""
  model = get_model(f"efficientnet-{variant}", classes)
  return model, jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, SIDE, SIDE, 3)))


@functools.cache
def efficientnet_and_shapes(variant: str):
  """Our EfficientNet and its variables' shapes, without compiling its init: what
  `pretrained.load` takes when the checkpoint fills every variable."""
  model = get_model(f"efficientnet-{variant}", 10)
  images = jax.ShapeDtypeStruct((1, SIDE, SIDE, 3), jnp.float32)
  return model, jax.eval_shape(model.init, jax.random.key(1), images)


@pytest.fixture(scope="session")  # once per worker (pytest-xdist shares tests out)
def keras_b0():
  model = keras_model("b0")
  return model, keras_weights(model)


@pytest.fixture(scope="session")  # once per worker (pytest-xdist shares tests out)
def b0_files(keras_b0, tmp_path_factory):
  return write_all_formats(tmp_path_factory.mktemp("b0"), *keras_b0, "efficientnet-b0")


def write_all_formats(folder, model, weights, scope):
  keras_path = str(folder / "keras.h5")
  model.save(keras_path)
  tf_path = write_tf_checkpoint(str(folder / "tf" / "model.ckpt"), official_tf(weights, scope))
  flax_path = str(folder / "original.msgpack")
  with open(flax_path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(original_flax_tree(weights)))
  return {"keras": keras_path, "tf": tf_path, "flax": flax_path}


@pytest.mark.parametrize("variant", ["b0", pytest.param("b2", marks=pytest.mark.slow)])
def test_every_format_gives_keras_logits(tmp_path, variant, keras_b0, b0_files):
  if variant == "b0":
    k_model, paths = keras_b0[0], b0_files
  else:
    k_model = keras_model(variant)
    paths = write_all_formats(tmp_path, k_model, keras_weights(k_model), "efficientnet-b2")
  images = np.random.default_rng(1).normal(size=(2, SIDE, SIDE, 3)).astype(np.float32)
  expected = np.asarray(k_model(images * 255.0, training=False))  # Keras rescales by 1/255
  # Shapes only: every variable comes from the file (one that did not would fail the apply).
  model, fresh = efficientnet_and_shapes(variant)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  for fmt, path in paths.items():
    assert pretrained.detect_format(path) == fmt
    variables = pretrained.load(path, model, fresh)
    np.testing.assert_allclose(apply(variables, images), expected, atol=1e-4, rtol=0, err_msg=fmt)


def test_raw_tf_variables_on_request(b0_files, keras_b0):
  model, fresh = efficientnet_and_variables("b0")
  ema = pretrained.load(b0_files["tf"], model, fresh)
  raw = pretrained.load(b0_files["tf"], model, fresh, use_ema=False)
  assert_trees_close(raw, jax.tree.map(lambda x: x + 0.5, ema))  # the raw copies' offset
  np.testing.assert_array_equal(ema["params"]["stem_conv"]["kernel"],
                                keras_b0[1][("stem_conv", "kernel")])


def assert_trees_close(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def test_another_number_of_classes_gets_a_fresh_head(b0_files, keras_b0, caplog):
  model, fresh = efficientnet_and_variables("b0", classes=5)
  for fmt, path in b0_files.items():
    caplog.clear()  # each format must warn by itself
    with caplog.at_level("WARNING"):
      variables = pretrained.load(path, model, fresh)
    assert "10-class classifier and the model 5 classes" in caplog.text, fmt
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(variables["params"]["head_dense"][leaf],
                                    fresh["params"]["head_dense"][leaf])
    np.testing.assert_array_equal(variables["params"]["head_conv"]["kernel"],
                                  keras_b0[1][("top_conv", "kernel")])
    np.testing.assert_array_equal(variables["batch_stats"]["blocks_5"]["depthwise_bn"]["var"],
                                  keras_b0[1][("block4a_bn", "moving_variance")])


@pytest.mark.parametrize("fmt", ["tf", "keras", "flax"])
def test_an_rgb_checkpoint_on_grayscale_data_says_so(b0_files, fmt):
  model = get_model("efficientnet-b0", 10)  # the digits: 1 channel, 10 classes
  with pytest.raises(
      pretrained.CheckpointError, match=r"was trained on 3-channel images and this dataset's "
      r"have 1 \(its stem convolution is \(3, 3, 3, 32\), the model's \(3, 3, 1, 32\)\): "
      r"finetune it on a dataset of 3-channel images"):
    pretrained.load(b0_files[fmt], model, pretrained.init_shapes(model, channels=1))


@pytest.mark.parametrize("fmt", ["tf", "keras", "flax"])
def test_a_checkpoint_of_another_variant_names_it(b0_files, fmt):
  for variant in ("b1", "b2"):  # more blocks; other widths too
    model = get_model(f"efficientnet-{variant}", 10)
    with pytest.raises(pretrained.CheckpointError) as error:
      pretrained.load(b0_files[fmt], model, pretrained.init_shapes(model))
    message = str(error.value)
    assert f"does not fit efficientnet-{variant}" in message
    assert "the checkpoint looks like efficientnet-b0." in message and "\n" not in message


def test_missing_and_unexpected_variables_are_listed(tmp_path, keras_b0):
  variables = official_tf(keras_b0[1], "efficientnet-b0")
  for name in ("efficientnet-b0/blocks_3/se/conv2d_1/bias",
               "efficientnet-b0/blocks_3/se/conv2d_1/bias/ExponentialMovingAverage"):
    del variables[name]
  variables["efficientnet-b0/blocks_3/conv2d_7/kernel"] = np.zeros((1, 1, 4, 4), np.float32)
  path = write_tf_checkpoint(str(tmp_path / "model.ckpt"), variables)
  model, fresh = efficientnet_and_variables("b0")
  with pytest.raises(
      pretrained.CheckpointError,
      match=r"2 variables do not match \(missing efficientnet-b0/blocks_3/se/"
      r"conv2d_1/bias; unexpected efficientnet-b0/blocks_3/conv2d_7/kernel"):
    pretrained.load(path, model, fresh)


def truncate(path: str) -> None:
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def test_truncated_files_are_refused(tmp_path, b0_files):
  model = get_model("efficientnet-b0", 10)
  shapes = pretrained.init_shapes(model)
  for fmt, path in b0_files.items():
    copy = tmp_path / f"copy_{fmt}"
    if fmt == "tf":
      shutil.copytree(os.path.dirname(path), copy)
      path = str(copy / os.path.basename(path))
      truncate(path + ".data-00000-of-00001")
    else:
      copy.write_bytes(open(path, "rb").read())
      path = str(copy)
      truncate(path)
    with pytest.raises(
        pretrained.CheckpointError,
        match=f"Could not read .*copy_{fmt}.* as a {fmt} checkpoint .*Download "
        "it again"):
      pretrained.load(path, model, shapes, fmt=fmt)
  with pytest.raises(pretrained.CheckpointError, match="No checkpoint at"):
    pretrained.load(str(tmp_path / "nothing"), model, shapes)


def official_l2_shapes(classes: int = 1000) -> dict[str, tuple[int, ...]]:
  """Variable names and shapes of the official efficientnet-l2 checkpoints.

  Written from the tensorflow/tpu builder (width 4.3, depth 5.3): every variable, its
  EMA copy, and the RMSProp slots of the trainable ones.
  """
  def filters(c):
    return efficientnet.round_filters(c, 4.3)

  shapes = {}

  def bn(scope, channels):
    for leaf in ("gamma", "beta", "moving_mean", "moving_variance"):
      shapes[f"{scope}/{leaf}"] = (channels,)

  shapes["stem/conv2d/kernel"] = (3, 3, 3, filters(32))
  bn("stem/tpu_batch_normalization", filters(32))
  index = 0
  for repeats, kernel, _, expand, first_in, out in efficientnet.STAGES:
    for repeat in range(int(np.ceil(5.3 * repeats))):
      inp = filters(first_in) if repeat == 0 else filters(out)
      scope, channels, n = f"blocks_{index}", inp * expand, 0
      if expand != 1:
        shapes[f"{scope}/conv2d/kernel"] = (1, 1, inp, channels)
        bn(f"{scope}/tpu_batch_normalization", channels)
        n = 1
      shapes[f"{scope}/depthwise_conv2d/depthwise_kernel"] = (kernel, kernel, channels, 1)
      bn(f"{scope}/tpu_batch_normalization" + (f"_{n}" if n else ""), channels)
      reduced = max(1, int(inp * 0.25))
      shapes.update({
          f"{scope}/se/conv2d/kernel": (1, 1, channels, reduced),
          f"{scope}/se/conv2d/bias": (reduced,),
          f"{scope}/se/conv2d_1/kernel": (1, 1, reduced, channels),
          f"{scope}/se/conv2d_1/bias": (channels,),
          f"{scope}/conv2d" + (f"_{n}" if n else "") + "/kernel": (1, 1, channels, filters(out))
      })
      bn(f"{scope}/tpu_batch_normalization_{n + 1}", filters(out))
      index += 1
  shapes["head/conv2d/kernel"] = (1, 1, filters(320), filters(1280))
  bn("head/tpu_batch_normalization", filters(1280))
  shapes.update({"head/dense/kernel": (filters(1280), classes), "head/dense/bias": (classes,)})
  named = {}
  for name, shape in shapes.items():
    name = f"efficientnet-l2/{name}"
    named[name] = named[f"{name}/ExponentialMovingAverage"] = shape
    if "moving_" not in name:
      named[f"{name}/RMSProp"] = named[f"{name}/RMSProp_1"] = shape
  named["global_step"] = ()
  return named


def test_l2_475_loads_the_full_official_variable_list_abstractly():
  shapes = official_l2_shapes()
  model = get_model("efficientnet-l2-475", 1000)
  fresh = pretrained.init_shapes(model)
  source = {n: jax.ShapeDtypeStruct(s, jnp.float32) for n, s in shapes.items()}
  read = []

  def load(source, fresh):
    return pretrained.convert(shapes, lambda n: read.append(n) or source[n], fresh, model, "tf")

  loaded = jax.eval_shape(load, source, fresh)  # no compute: shapes only
  assert jax.tree.map(lambda x: x.shape, loaded) == jax.tree.map(lambda x: x.shape, fresh)
  assert len(read) == len(jax.tree.leaves(fresh)) == 1 + sum(not n.endswith(
      ("/ExponentialMovingAverage", "/RMSProp", "/RMSProp_1", "global_step")) for n in shapes) - 1
  assert all(n.endswith("/ExponentialMovingAverage") for n in read)
  count = sum(np.prod(x.shape) for x in jax.tree.leaves(loaded["params"]))
  assert 470e6 < count < 490e6, count  # "about 480M" (Xie et al. 2020)


def write_tiny_checkpoint(prefix: str, classes: int = 7):
  """efficientnet-mini (1 input channel) with random BatchNorm statistics, TF names."""
  model = get_model("efficientnet-mini", classes)
  variables = jax.jit(model.init)(jax.random.key(2), jnp.zeros((1, 32, 32, 1)))
  rng = np.random.default_rng(3)
  variables["batch_stats"] = jax.tree.map(
      lambda x: rng.uniform(0.5, 1.5, x.shape).astype(np.float32), variables["batch_stats"])
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  expands = {int(n.split("/")[1][7:]) for n in flat if "/expand_conv/" in n}
  named = {
      pretrained.source_name(n, "tf", model, expands, "efficientnet-mini"): np.asarray(v)
      for n, v in flat.items()
  }
  write_tf_checkpoint(prefix, {
      **named,
      **{
          f"{n}/ExponentialMovingAverage": v for n, v in named.items()
      }
  })
  return variables


@pytest.mark.slow
def test_the_converter_writes_an_orbax_folder_that_finetunes_with_frozen_batch_norm(tmp_path):
  written = write_tiny_checkpoint(str(tmp_path / "tf" / "model.ckpt"))
  converted = tmp_path / "converted"
  result = run_binary("sam_jax.pretrained", f"--from={tmp_path / 'tf'}",
                      "--model=efficientnet-mini", f"--to={converted}")
  assert result.returncode == 0, result.stderr
  assert "efficientnet-mini" in result.stdout and "7 classes" in result.stdout
  assert "orbax" not in result.stderr.lower()  # the result, not Orbax's INFO lines about it
  again = run_binary("sam_jax.pretrained", f"--from={tmp_path / 'tf'}", "--model=efficientnet-mini",
                     f"--to={converted}")
  assert again.returncode == 2 and "Traceback" not in again.stderr
  assert again.stderr.strip().splitlines()[-1] == (
      f"sam_jax.pretrained: error: {converted} exists already: give --to a new folder.")
  # What --from_pretrained_checkpoint --efficientnet_checkpoint_path=DIR sets (test_configs).
  config = tiny_config(dataset="digits", model_name="efficientnet-mini", num_train_steps=1,
                       gradient_clipping=1.0, label_smoothing=0.1, init_from=str(converted),
                       freeze_batch_norm=True)
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))
  state = ocp.StandardCheckpointer().restore(str(workdir / "checkpoints" / "1" / "default"))
  assert int(state["step"]) == 1
  assert_trees_close(state["batch_stats"], written["batch_stats"])  # frozen statistics
  before, after = written["params"]["stem_conv"]["kernel"], state["params"]["stem_conv"]["kernel"]
  assert 0 < np.abs(after - before).max() < 0.1  # one small step from the checkpoint
  assert state["params"]["head_dense"]["kernel"].shape[-1] == 10


def test_a_bad_init_checkpoint_leaves_the_workdir_untouched(tmp_path):
  write_tiny_checkpoint(str(tmp_path / "tf" / "model.ckpt"))
  truncate(str(tmp_path / "tf" / "model.ckpt.data-00000-of-00001"))
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("kept")
  config = tiny_config(dataset="digits", model_name="efficientnet-mini", num_train_steps=1,
                       freeze_batch_norm=True)
  for bad, message in ((tmp_path / "tf", "Could not read"), (tmp_path / "missing",
                                                             "No checkpoint at")):
    config.init_from = str(bad)
    with pytest.raises(UsageError, match=message):
      loop.train_and_evaluate(config, str(workdir))
    assert os.listdir(workdir) == ["notes.txt"]


def test_files_that_are_not_published_checkpoints_are_refused(tmp_path, keras_b0):
  model = get_model("efficientnet-b0", 10)
  shapes = pretrained.init_shapes(model)
  foreign = tmp_path / "foreign.msgpack"
  foreign.write_bytes(flax.serialization.msgpack_serialize({"params": {"w": np.zeros(3)}}))
  with pytest.raises(pretrained.CheckpointError,
                     match="is a msgpack file but not the original SAM's .model, state. pair"):
    pretrained.load(str(foreign), model, shapes)
  keras3 = str(tmp_path / "b0.weights.h5")
  keras_b0[0].save_weights(keras3)
  with pytest.raises(pretrained.CheckpointError,
                     match="is not a Keras weight file by layer name .a Keras 3 .weights.h5"):
    pretrained.load(keras3, model, shapes)
  with pytest.raises(pretrained.CheckpointError, match="Unknown checkpoint format 'onnx': "
                     "choose tf, flax, keras, orbax"):
    pretrained.load(str(foreign), model, shapes, fmt="onnx")
  with pytest.raises(pretrained.CheckpointError, match="Pretrained checkpoints are "
                     "EfficientNets; Resnet50 is not one"):
    pretrained.convert_to_orbax(str(foreign), "Resnet50", str(tmp_path / "out"))
