"""ViT and Mixer checkpoints in google-research/vision_transformer's `.npz` layout: names
checked and renamed from pre-Linen numbering, the head replaced for new classes, the
position embeddings resized for a new resolution, and a finetuning run that starts there."""

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from sam_jax import loop
from sam_jax.analysis import report
from sam_jax.models import get_model
from sam_jax.pretrained import CheckpointError, convert_to_orbax, load
from sam_jax.pretrained.transformers import linen_names

# How the published ViT files (ViT-B_16.npz, the ViT-SAM ones, ...) name a block's modules:
# pre-Linen Flax counted all of a module's children, Linen counts per class.
PRE_LINEN = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3"
}


def init(name, classes, side, channels=3):
  model = get_model(name, classes)
  return model, model.init(jax.random.key(0), jnp.ones((1, side, side, channels)), train=False)


def write_npz(path, params, rename=None, extra=None):
  flat = flax.traverse_util.flatten_dict(jax.device_get(params), sep="/")
  if rename:
    flat = {"/".join(rename.get(p, p) for p in n.split("/")): v for n, v in flat.items()}
  np.savez(path, **flat, **(extra or {}))
  return flat


def test_linen_names_renumber_per_class():
  names = [
      "Transformer/encoderblock_0/LayerNorm_0/scale",
      "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
      "Transformer/encoderblock_0/LayerNorm_2/bias",
      "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel",
      "Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel",
      "Transformer/encoderblock_11/LayerNorm_0/scale", "head/kernel"
  ]
  assert list(linen_names(names).values()) == [
      "Transformer/encoderblock_0/LayerNorm_0/scale",
      "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
      "Transformer/encoderblock_0/LayerNorm_1/bias",
      "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel",
      "Transformer/encoderblock_0/MlpBlock_0/Dense_1/kernel",
      "Transformer/encoderblock_11/LayerNorm_0/scale", "head/kernel"
  ]


@pytest.mark.parametrize("name", ["ViT-mini_2", "Mixer-mini_2"])
def test_a_published_layout_loads_bit_for_bit(name, tmp_path):
  model, saved = init(name, 10, 8)
  saved = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(5), p.shape), saved)
  write_npz(tmp_path / "m.npz", saved["params"], PRE_LINEN)
  _, fresh = init(name, 10, 8)
  loaded = load(str(tmp_path / "m.npz"), model, fresh)
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded, jax.device_get(saved)))


def test_finetuning_replaces_the_head_resizes_positions_and_drops_pre_logits(tmp_path, caplog):
  _, saved = init("ViT-mini_2", 1000, 8)  # 4x4 patches + the class token
  flat = write_npz(tmp_path / "m.npz", saved["params"], PRE_LINEN, extra={
      "pre_logits/kernel": np.ones((32, 32)),
      "pre_logits/bias": np.ones(32)
  })
  model, fresh = init("ViT-mini_2", 10, 16)  # 8x8 patches, 10 classes
  loaded = flax.traverse_util.flatten_dict(
      load(str(tmp_path / "m.npz"), model, fresh)["params"], sep="/")
  fresh = flax.traverse_util.flatten_dict(fresh["params"], sep="/")
  renamed = {new: flat[old] for old, new in linen_names(list(flat)).items()}
  for name, value in loaded.items():
    if name.startswith("head/"):
      assert np.array_equal(value, fresh[name])  # the new classifier, as initialised
    elif name != "Transformer/posembed_input/pos_embedding":
      assert np.array_equal(value, renamed[name]), name
  positions, old = loaded["Transformer/posembed_input/pos_embedding"], renamed[
      "Transformer/posembed_input/pos_embedding"]
  assert positions.shape == (1, 65, 32)
  assert np.array_equal(positions[:, 0], old[:, 0])  # the class token's, kept
  # Bilinear with the corners aligned (the reference's order-1 zoom): new cell j lies at
  # old coordinate j * 3 / 7 along each axis.
  coords = np.arange(8) * 3 / 7
  low = np.minimum(np.floor(coords).astype(int), 2)
  weight = (coords - low)[:, None, None]

  def along_first_axis(a):
    return a[low] * (1 - weight) + a[low + 1] * weight

  old_grid = old[0, 1:].reshape(4, 4, 32)
  expected = along_first_axis(along_first_axis(old_grid).transpose(1, 0, 2)).transpose(1, 0, 2)
  np.testing.assert_allclose(positions[0, 1:].reshape(8, 8, 32), expected, rtol=1e-5, atol=1e-6)
  assert "pre-logits layer the model does not have: dropped" in caplog.text
  assert "1000-class classifier and the model 10 classes" in caplog.text


def test_what_does_not_fit_is_one_line_naming_it(tmp_path):
  model, saved = init("ViT-mini_2", 10, 8)
  flat = write_npz(tmp_path / "m.npz", saved["params"])
  del flat["Transformer/encoder_norm/scale"]
  np.savez(tmp_path / "missing.npz", **flat)
  with pytest.raises(
      CheckpointError, match=r"1 parameters do not match \(missing "
      r"params/Transformer/encoder_norm/scale\)"):
    load(str(tmp_path / "missing.npz"), model, saved)
  tiny, _ = init("ViT-Ti_2", 10, 8)  # another size: every width differs
  with pytest.raises(CheckpointError, match=r"does not fit the model: \d+ parameters"):
    load(str(tmp_path / "m.npz"), tiny, jax.eval_shape(lambda: init("ViT-Ti_2", 10, 8)[1]))
  efficientnet = get_model("efficientnet-mini", 10)
  with pytest.raises(CheckpointError, match=r"holds a ViT or Mixer and the model is EfficientNet"):
    load(str(tmp_path / "m.npz"), efficientnet, {})


@pytest.mark.slow
def test_a_finetuning_run_starts_from_the_npz(tmp_path):
  _, saved = init("ViT-mini_2", 100, 8, channels=1)  # the digits are grayscale
  write_npz(tmp_path / "m.npz", saved["params"], PRE_LINEN)
  config = tiny_config(dataset="digits", model_name="ViT-mini_2", optimizer="adamw",
                       learning_rate=1e-9, num_train_steps=2, init_from=str(tmp_path / "m.npz"))
  loop.train_and_evaluate(config, str(tmp_path / "run"))
  variables = report.load_run(str(tmp_path / "run"))[3]
  ours = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  theirs = flax.traverse_util.flatten_dict(jax.device_get(saved["params"]), sep="/")
  # Two steps of 1e-9 later, everything but the new 10-class head is the checkpoint's.
  assert ours["head/kernel"].shape == (32, 10)
  assert max(np.abs(ours[n] - theirs[n]).max() for n in ours if not n.startswith("head/")) < 1e-6


@pytest.mark.slow  # Orbax writes and reads two folders
@pytest.mark.parametrize("name", ["ViT-mini_2", "Mixer-mini_2"])
def test_the_converter_writes_an_orbax_folder_that_loads_bit_for_bit(name, tmp_path):
  model, saved = init(name, 7, 8)  # 4x4 patches of 2: the resolution read back from the file
  saved = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(5), p.shape), saved)
  write_npz(tmp_path / "m.npz", saved["params"], PRE_LINEN)
  converted = convert_to_orbax(str(tmp_path / "m.npz"), name, str(tmp_path / "orbax"))
  assert jax.tree.all(jax.tree.map(np.array_equal, converted, jax.device_get(saved)))
  _, fresh = init(name, 7, 8)
  loaded = load(str(tmp_path / "orbax"), model, fresh)  # what --config.init_from=DIR reads
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded, jax.device_get(saved)))
  with pytest.raises(CheckpointError, match="holds a ViT or a Mixer; WideResnet_mini is neither"):
    convert_to_orbax(str(tmp_path / "m.npz"), "WideResnet_mini", str(tmp_path / "other"))
  assert not (tmp_path / "other").exists()
