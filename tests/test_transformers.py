"""ViT and MLP-Mixer: parameter counts of the reference implementation, the forward pass
against a float64 numpy transcription of the papers' equations, and training runs with
each base optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import tiny_config
from sam_jax import events, loop
from sam_jax.analysis import report
from sam_jax.models import get_model

# google-research/vision_transformer (vit_jax/models_vit.py, models_mixer.py at HEAD of
# 2024), 224 px, 1,000 classes, class token, no pre-logits: the sums of the shapes of
# `jax.eval_shape(model.init)`, computed from that code (the ViT and Mixer sizes of
# vit_jax/configs/models.py; Mixer-S from the Mixer paper's Table 1). Their parameter
# trees, names and shapes, equal ours leaf for leaf, and their outputs ours bit for bit
# (ViT-S/4 and Mixer-S/4 on 32 px, checked once against that code; it needs einops and
# is not a dependency).
REFERENCE_COUNTS = {
    "ViT-Ti_16": 5_717_416,
    "ViT-Ti_32": 6_131_560,
    "ViT-S_16": 22_050_664,
    "ViT-S_32": 22_878_952,
    "ViT-B_16": 86_567_656,
    "ViT-B_32": 88_224_232,
    "ViT-L_16": 304_326_632,
    "ViT-L_32": 306_535_400,
    "Mixer-S_16": 18_528_264,
    "Mixer-S_32": 19_104_624,
    "Mixer-B_16": 59_880_472,
    "Mixer-B_32": 60_293_428,
    "Mixer-L_16": 208_196_168,
    "Mixer-L_32": 206_939_264,
}


@pytest.mark.parametrize("name", REFERENCE_COUNTS)
def test_parameter_counts_are_the_reference_implementations(name):
  model = get_model(name, 1000)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.ones((1, 224, 224, 3)), train=False))
  assert set(variables) == {"params"}  # no BatchNorm statistics
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables)) == REFERENCE_COUNTS[name]


# --- the forward pass in float64 numpy ---


def layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x):  # the tanh approximation (Flax's nn.gelu default, the reference's)
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def dense(x, p):
  return x @ p["kernel"] + p["bias"]


def mlp(x, p):
  return dense(gelu(dense(x, p["Dense_0"])), p["Dense_1"])


def patches(images, p, patch):
  """The strided VALID conv as a matmul of the flattened patches: [n, tokens, hidden]."""
  n, h, w, c = images.shape
  x = images.reshape(n, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, (h // patch) * (w // patch), patch * patch * c)
  return x @ p["kernel"].reshape(-1, p["kernel"].shape[-1]) + p["bias"]


def attention(x, p, heads):
  """softmax(q k^T / sqrt(d)) v per head, then the output projection."""
  q, k, v = (
      np.einsum("ntd,dhe->nthe", x, p[name]["kernel"]) + p[name]["bias"]
      for name in ("query", "key", "value"))
  logits = np.einsum("nthe,nshe->nhts", q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("nhts,nshe->nthe", weights, v)
  return np.einsum("nthe,hed->ntd", out, p["out"]["kernel"]) + p["out"]["bias"]


def vit_forward(params, images, patch, layers, heads):
  x = patches(images, params["embedding"], patch)
  x = np.concatenate([np.broadcast_to(params["cls"], (len(x), 1, x.shape[-1])), x], axis=1)
  t = params["Transformer"]
  x = x + t["posembed_input"]["pos_embedding"]
  for i in range(layers):
    b = t[f"encoderblock_{i}"]
    x = x + attention(layer_norm(x, b["LayerNorm_0"]), b["MultiHeadDotProductAttention_0"], heads)
    x = x + mlp(layer_norm(x, b["LayerNorm_1"]), b["MlpBlock_0"])
  return dense(layer_norm(x, t["encoder_norm"])[:, 0], params["head"])


def mixer_forward(params, images, patch, blocks):
  x = patches(images, params["stem"], patch)
  for i in range(blocks):
    b = params[f"MixerBlock_{i}"]
    y = layer_norm(x, b["LayerNorm_0"]).transpose(0, 2, 1)
    x = x + mlp(y, b["token_mixing"]).transpose(0, 2, 1)
    x = x + mlp(layer_norm(x, b["LayerNorm_1"]), b["channel_mixing"])
  return dense(layer_norm(x, params["pre_head_layer_norm"]).mean(1), params["head"])


def perturbed(params):
  """Every parameter moved off its initial value (the head starts at zero, biases near it)."""
  keys = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(params))))
  return jax.tree.map(lambda p: p + 0.3 * jax.random.normal(next(keys), p.shape), params)


@pytest.mark.parametrize("name, oracle", [
    ("ViT-mini_2", lambda p, x: vit_forward(p, x, patch=2, layers=2, heads=2)),
    ("Mixer-mini_2", lambda p, x: mixer_forward(p, x, patch=2, blocks=2)),
])
def test_forward_matches_a_float64_transcription(name, oracle):
  model = get_model(name, 10)
  images = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
  params = perturbed(model.init(jax.random.key(0), images, train=False)["params"])
  ours = np.asarray(model.apply({"params": params}, images, train=False))
  expected = oracle(
      jax.tree.map(lambda p: np.asarray(p, np.float64), params), np.asarray(images, np.float64))
  assert np.abs(expected).max() > 1.0  # a forward pass that says something
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_dropout_acts_only_in_training():
  model = get_model("ViT-mini_2", 10, dropout_rate=0.5)
  images = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = perturbed(model.init(jax.random.key(0), images, train=False))
  rngs = lambda seed: {"dropout": jax.random.key(seed)}
  evaluated = model.apply(variables, images, train=False)
  assert np.array_equal(evaluated, model.apply(variables, images, train=False, rngs=rngs(1)))
  first, second = (model.apply(variables, images, train=True, rngs=rngs(s)) for s in (1, 2))
  assert not np.allclose(first, second) and not np.allclose(first, evaluated)


# --- through the training loop, with each base optimizer ---

RUNS = [  # (model, dataset, optimizer, SAM): each optimizer once, each family on the digits
    # and mock CIFAR, with and without SAM (the optimizer chain does not depend on the model);
    # the CIFAR ViT with the ImageNet recipe's options (RECIPE)
    ("ViT-mini_2", "digits", "adamw", True),
    ("ViT-mini_8", "cifar10", "sgd", False),
    ("Mixer-mini_2", "digits", "lion", True),
    ("Mixer-mini_8", "cifar100", "rmsprop", False),
]

# configs/transformers_imagenet.py's options beyond the optimizer.
RECIPE = dict(loss="sigmoid", head_bias_init=-10.0, normalization="minus_one_to_one",
              classifier="gap", weight_decay_kernels_only=True, warmup_steps=2)


@pytest.mark.slow
@pytest.mark.parametrize("name, dataset, optimizer, sam", RUNS)
def test_each_family_trains_with_each_base_optimizer(name, dataset, optimizer, sam, tmp_path):
  recipe = RECIPE if (name, dataset) == ("ViT-mini_8", "cifar10") else {}
  config = tiny_config(
      model_name=name,
      dataset=dataset,
      optimizer=optimizer,
      num_epochs=1,
      num_train_steps=4,
      learning_rate=1e-3 if optimizer == "lion" else 0.01,
      warmup_epochs=0.0,
      lr_schedule="linear",
      dropout_rate=0.1 if name.startswith("ViT") else None,  # Mixer has none
      sam=dict(rho=0.05 if sam else 0.0),
      **recipe)
  with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
    results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["steps"] == 4 and np.isfinite(results["test_loss"])
  _, _, model, variables, _ = report.load_run(str(tmp_path))
  assert not jax.tree.leaves(variables.get("batch_stats", {}))  # LayerNorm only
  assert getattr(model, "dropout_rate", 0.1) == 0.1  # the ViT's, from the config
  tags = set(events.read_scalars(str(tmp_path)))
  assert ("train_perturbed_loss" in tags) == sam  # the SAM pass ran, or not
  # The head, zero at initialisation, learned something.
  assert np.abs(np.asarray(variables["params"]["head"]["kernel"])).max() > 0
  if recipe:  # the mean-token head, its bias from -10, and the sigmoid loss: -log s(-10) ~ 10
    # for the true class (softmax's would be near log 10 = 2.3)
    assert model.classifier == "gap" and "cls" not in variables["params"]
    assert np.asarray(variables["params"]["head"]["bias"]).max() < -9
    assert 9 < results["test_loss"] < 11
