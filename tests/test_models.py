"""The model zoo: parameter counts, forward passes, dtypes and the stochastic regularisers."""

import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, max_abs_diff, tiny_config
from sam_jax import optim, replicas, steps
from sam_jax.errors import UsageError
from sam_jax.models import get_model, input_resolution
from sam_jax.models.efficientnet import MBConvBlock, stochastic_depth
from sam_jax.models.layers import train_rngs
from sam_jax.models.pyramidnet import shake_drop
from sam_jax.models.shake_shake import shake_shake

# (name, classes, resolution): parameters, from the original code's tests and the
# published model tables.
PARAMETER_COUNTS = {
    ("WideResnet28x10", 100, 32): 36_278_324,
    ("WideResnet28x6_ShakeShake", 100, 32): 26_227_572,
    ("Pyramid_ShakeDrop", 100, 32): 26_288_692,
    ("Resnet50", 1000, 224): 25_557_032,
    ("efficientnet-b0", 1000, 224): 5_288_548,
    ("efficientnet-b1", 1000, 240): 7_794_184,
    ("efficientnet-b2", 1000, 260): 9_109_994,
    ("efficientnet-b3", 1000, 300): 12_233_232,
    ("efficientnet-b4", 1000, 380): 19_341_616,
    ("efficientnet-b5", 1000, 456): 30_389_784,
    ("efficientnet-b6", 1000, 528): 43_040_704,
    ("efficientnet-b7", 1000, 600): 66_347_960,
}
TINY = [
    "WideResnet_mini", "WideResnet_ShakeShake_mini", "Pyramid_ShakeDrop_mini",
    "Pyramid_vanilla_mini", "Resnet20", "Resnet18", "efficientnet-mini"
]


def parameter_count(name, classes, resolution):
  model = get_model(name, classes)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)), train=False))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("key", sorted(PARAMETER_COUNTS))
def test_parameter_counts_match_the_originals(key):
  assert parameter_count(*key) == PARAMETER_COUNTS[key]


def test_efficientnet_l2_has_the_models_guides_parameter_count_and_its_resolutions():
  """The NoisyStudent paper (Xie et al. 2020) gives L2 480M parameters; the table of
  docs/guides/models.md gives ours exactly (b0..b7 match the original's counts above, L2
  scales the same)."""
  guide = open(os.path.join(ROOT, "docs", "guides", "models.md")).read()
  stated = int(re.search(r"L2: ([\d,]+) \(1000 classes\)", guide).group(1).replace(",", ""))
  assert parameter_count("efficientnet-l2", 1000, 64) == stated
  assert round(stated / 1e6) == 480
  resolutions = {
      name: input_resolution(get_model(name, 10))
      for name in ("efficientnet-b0", "efficientnet-b7", "efficientnet-l2", "efficientnet-l2-475",
                   "WideResnet28x10")
  }
  assert resolutions == {
      "efficientnet-b0": 224,
      "efficientnet-b7": 600,
      "efficientnet-l2": 800,
      "efficientnet-l2-475": 475,
      "WideResnet28x10": None
  }


def test_cifar_resnet32_and_the_vanilla_pyramidnet_are_the_expected_sizes():
  assert parameter_count("Resnet32", 10, 32) == 464_154  # He et al. (2016): 0.46M
  shakedrop, vanilla = (
      parameter_count(n, 100, 32) for n in ("Pyramid_ShakeDrop", "Pyramid_vanilla"))
  assert vanilla == shakedrop  # ShakeDrop has no parameters


def test_unknown_model_names_say_what_exists():
  for name in ("Resnet51", "WideResnet29x10", "efficientnet-b9"):
    with pytest.raises(UsageError, match=f"Unknown model '{name}': choose one of"):
      get_model(name, 10)


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.key(3), (4, 16, 16, 3))


STOCHASTIC = ("WideResnet_ShakeShake_mini", "Pyramid_ShakeDrop_mini", "efficientnet-mini")


@pytest.mark.parametrize("name", TINY)
def test_forward_passes_keys_and_dtypes(name, images):
  model = get_model(name, 10)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  train = jax.jit(
      lambda v, x, k: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=train_rngs(k)))
  (logits, updates), (again, _), (other, _) = (
      train(variables, images, jax.random.key(k)) for k in (1, 1, 2))
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  assert max_abs_diff(updates["batch_stats"], variables["batch_stats"]) > 0  # BN learns
  np.testing.assert_array_equal(logits, again)  # a function of the key...
  if name in STOCHASTIC:  # ...whose draws change with it
    assert max_abs_diff(logits, other) > 1e-4
  else:
    np.testing.assert_array_equal(logits, other)

  def evaluate(dtype):
    model = get_model(name, 10, dtype=dtype)
    return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)

  eval32, eval16 = evaluate(jnp.float32), evaluate(jnp.bfloat16)
  assert eval16.dtype == eval32.dtype == jnp.float32 and np.isfinite(eval32).all()
  scale = float(np.abs(eval32).max()) + 1e-3
  assert 0 < float(np.abs(eval16 - eval32).max()) < 0.1 * scale  # bfloat16, close to f32
  variables16 = jax.eval_shape(
      lambda x: get_model(name, 10, dtype=jnp.bfloat16).init(jax.random.key(0), x, train=False),
      images)
  for leaf in jax.tree.leaves(variables16):  # parameters and statistics stay float32
    assert leaf.dtype == jnp.float32


class Regulariser(nn.Module):
  """Applies one stochastic regulariser to fixed inputs."""
  kind: str
  true_gradient: bool = False

  @nn.compact
  def __call__(self, a, b, train):
    if self.kind == "shake_shake":
      return shake_shake(self, a, b, train, self.true_gradient)
    if self.kind == "shake_drop":
      return shake_drop(self, a, 0.7, train, self.true_gradient)
    return stochastic_depth(self, a, 0.3, train)


@pytest.mark.parametrize("kind", ["shake_shake", "shake_drop", "stochastic_depth"])
def test_eval_output_is_the_expected_train_output(kind):
  a = jax.random.normal(jax.random.key(0), (2, 3, 3, 4))
  b = jax.random.normal(jax.random.key(1), (2, 3, 3, 4))
  module = Regulariser(kind)
  eval_out = module.apply({}, a, b, False)
  draws = jax.vmap(lambda k: module.apply({}, a, b, True, rngs=train_rngs(k)))(
      jax.random.split(jax.random.key(2), 40_000))
  assert float(draws.std(0).max()) > 0.1  # training is random
  # Within 4.5 standard errors, element by element (72 elements: a false alarm has
  # probability 5e-4; these draws are within 1.7). An eval output 5% off is 12 or more
  # standard errors away for each of the three.
  standard_error = np.asarray(draws.std(0)) / np.sqrt(len(draws))
  assert (np.abs(np.asarray(draws.mean(0)) - eval_out) <= 4.5 * standard_error + 1e-6).all()


@pytest.mark.parametrize("kind", ["shake_shake", "shake_drop"])
def test_backward_pass_uses_its_own_draw_unless_true_gradient(kind):
  """d out / d a is the backward gate (coefficient); with true_gradient the forward one."""
  a, b = jnp.full((64, 1, 1, 1), 2.0), jnp.full((64, 1, 1, 1), -1.0)
  for true_gradient in (False, True):
    module = Regulariser(kind, true_gradient)
    run = lambda a: module.apply({}, a, b, True, rngs=train_rngs(jax.random.key(5)))
    out, gradient = run(a), jax.grad(lambda a: run(a).sum())(a)
    # The forward coefficient of a, recovered from the output.
    forward = (out - b) / (a - b) if kind == "shake_shake" else out / a
    same = np.allclose(gradient, forward, atol=1e-6)
    assert same == true_gradient
    if kind == "shake_shake":
      assert (0 <= gradient).all() and (gradient <= 1).all()
    else:  # forward coefficient in [-1, 1], backward in [0, 1]
      assert forward.min() < 0 and (true_gradient or gradient.min() >= 0)


class ShakeNet(nn.Module):
  """Two dense branches mixed by shake-shake: the smallest model with `true_gradient`."""
  num_classes: int = 10
  true_gradient: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape((x.shape[0], -1))
    mixed = shake_shake(self, nn.Dense(16)(x), nn.Dense(16)(x), train, self.true_gradient)
    return nn.Dense(self.num_classes)(mixed)


def test_true_gradient_ascent_changes_the_sam_step_of_a_shake_model():
  model = ShakeNet()
  config = tiny_config(weight_decay=0.0, sam=dict(rho=0.5))
  layout, mesh = replicas.make_layout(8, 8, 1), replicas.make_mesh(1)
  tx = optim.create_optimizer(config, 10, replicas.REPLICA_AXES)
  batch = {
      "image": np.random.default_rng(0).standard_normal((8, 8, 8, 3), np.float32),
      "label": np.arange(8, dtype=np.int32)
  }
  params = {}
  for flag in (False, True):
    state = replicas.replicate(
        steps.init_train_state(model, tx, jax.random.key(0), (8, 8, 3)), mesh)
    step = steps.make_train_step(model, tx, mesh, layout, true_gradient_ascent=flag)
    state, _ = step(state, replicas.shard_batch(batch, mesh), jax.random.key(1))
    params[flag] = jax.tree.map(np.asarray, state.params)
  assert max_abs_diff(params[False], params[True]) > 1e-6


def test_wide_resnet_classifier_kernel_is_the_originals_uniform():
  # google-research/sam sam_jax/models/utils.py:64-78: U(-1, 1) / sqrt(num_outputs), used
  # by wide_resnet.py:236; Flax's default (lecun normal, std 1/sqrt(64) here) would fail.
  model = get_model("WideResnet_mini", 100)
  kernel = np.asarray(
      model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]["Dense_0"]["kernel"],
      np.float64)
  bound = 1 / np.sqrt(100)
  assert kernel.shape == (64, 100)
  assert 0.99 * bound < np.abs(kernel).max() <= bound
  assert abs(kernel.std() - bound / np.sqrt(3)) < 0.03 * bound  # 6,400 draws: 0.9% s.e.


def test_additional_skip_connections_add_the_image_after_the_last_group():
  # wide_resnet.py:225-226 of the original: x = _output_add(x, first_x). With every conv
  # zeroed, blocks and group skips carry zeros and only the pooled image reaches the head:
  # logits = relu(mean over pixels of the image / sqrt(1 + eps)), zero-padded, @ W + b.
  images = jax.random.uniform(jax.random.key(4), (2, 16, 16, 3))
  model = get_model("WideResnet_mini", 10, additional_skip_connections=True)
  variables = model.init(jax.random.key(0), images)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x)
      if "Conv" in jax.tree_util.keystr(path) else x, variables["params"])
  logits = model.apply({**variables, "params": params}, images)
  features = np.zeros((2, 64))
  features[:, :3] = np.asarray(images, np.float64).mean(axis=(1, 2)) / np.sqrt(1 + 1e-5)
  dense = params["Dense_0"]
  expected = features @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"])
  assert np.abs(expected).max() > 0.1
  np.testing.assert_allclose(logits, expected, atol=1e-5)
  plain = get_model("WideResnet_mini", 10).apply({**variables, "params": params}, images)
  np.testing.assert_allclose(plain, np.broadcast_to(dense["bias"], plain.shape), atol=1e-6)


def test_additional_skip_connections_change_the_function_not_the_parameters(images):
  plain = get_model("WideResnet_mini", 10)
  skips = get_model("WideResnet_mini", 10, additional_skip_connections=True)
  variables = plain.init(jax.random.key(0), images, train=False)
  assert jax.tree.structure(variables) == jax.tree.structure(
      skips.init(jax.random.key(0), images, train=False))
  difference = max_abs_diff(plain.apply(variables, images), skips.apply(variables, images))
  assert difference > 1e-3
  with pytest.raises(UsageError, match="'Resnet20' does not take these options"):
    get_model("Resnet20", 10, additional_skip_connections=True)


def resnet_block_input_and_stem(name, images):
  """The first residual block's input and, computed apart, max_pool(BN(stem conv))."""
  model = get_model(name, 10)
  variables = jax.jit(model.init)(jax.random.key(0), images)

  @jax.jit
  def block_input(variables, images):
    seen = []

    def record(method, args, kwargs, context):
      if context.module.name == "ResidualBlock_0" and context.method_name == "__call__":
        seen.append(args[0])
      return method(*args, **kwargs)

    with nn.intercept_methods(record):
      model.apply(variables, images)
    return seen[0]

  kernel = variables["params"]["conv_init"]["kernel"]
  stem = jax.lax.conv_general_dilated(images, kernel, (2, 2), [(3, 3), (3, 3)],
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  stem = stem / np.sqrt(1 + 1e-5)  # BatchNorm at its initial statistics, scale 1, bias 0
  return (block_input(variables, images), nn.max_pool(stem, (3, 3), (2, 2),
                                                      padding="SAME"), variables["params"])


def test_the_papers_imagenet_resnet_and_the_standard_v1_5():
  # google-research/sam sam_jax/imagenet_models/resnet.py:88-90: conv_init, bn_init, then
  # max_pool, no ReLU; :82 nn.Conv.partial(bias=False) and :100 nn.Dense with old Flax's
  # default kernel_init, lecun_normal: truncated normal, variance 1 / fan_in.
  images = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  paper, expected, params = resnet_block_input_and_stem("Resnet18", images)
  np.testing.assert_allclose(paper, expected, atol=1e-5)
  assert float(paper.min()) < -0.1  # the negative half of the BatchNorm output goes on
  standard, expected_standard, standard_params = resnet_block_input_and_stem(
      "Resnet18_v1.5", images)
  np.testing.assert_allclose(standard, nn.relu(expected_standard), atol=1e-5)
  assert jax.tree.structure(params) == jax.tree.structure(standard_params)

  def kernels(tree):  # the convs and the classifier with at least 10^5 weights
    return [(jax.tree_util.keystr(path), np.asarray(x, np.float64))
            for path, x in jax.tree_util.tree_leaves_with_path(tree)
            if x.ndim in (2, 4) and x.size >= 100_000]

  assert len(kernels(params)) == len(kernels(standard_params)) == 12
  for (path, paper_kernel), (_, standard_kernel) in zip(kernels(params), kernels(standard_params)):
    fan_in = np.prod(paper_kernel.shape[:-1])
    fan_out = np.prod(paper_kernel.shape[:-2]) * paper_kernel.shape[-1]
    lecun = 1 / np.sqrt(fan_in)  # the std; truncated at 2 / 0.8796 std_before_truncation
    assert abs(paper_kernel.std() / lecun - 1) < 0.02, path
    assert np.abs(paper_kernel).max() <= 2 * lecun / 0.87962566 + 1e-6, path
    if paper_kernel.ndim == 4:  # He normal, fan out, not truncated
      assert abs(standard_kernel.std() / np.sqrt(2 / fan_out) - 1) < 0.02, path
      assert np.abs(standard_kernel).max() > 2 * np.sqrt(2 / fan_out) / 0.87962566, path


def test_efficientnet_initialisers_are_the_originals():
  # google-research/sam sam_jax/efficientnet/efficientnet.py:60-61: every conv kernel
  # variance_scaling(2.0, 'fan_out', 'truncated_normal'), depthwise ones laid out
  # [k, k, C, 1] (:125-131) so that fan_out = k * k (a [k, k, 1, C] kernel would have
  # k * k * C, and a std sqrt(C) = 20 times smaller). One block: expansion 64 -> 384,
  # 5x5 depthwise, squeeze-excite, projection to 96.
  block = MBConvBlock(64, 96, kernel=5, strides=1, expand_ratio=6, drop_rate=0.0)
  init = jax.jit(lambda x: block.init(jax.random.key(0), x, False))
  params = init(jnp.zeros((1, 8, 8, 64)))["params"]
  assert params["depthwise_conv"]["kernel"].shape == (5, 5, 384, 1)
  normalised = {"depthwise": [], "conv": []}
  for path, kernel in jax.tree_util.tree_leaves_with_path(params):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      kernel = np.asarray(kernel, np.float64)
      fan_out = np.prod(kernel.shape[:-2]) * kernel.shape[-1]
      normalised["depthwise" if "depthwise" in name else "conv"].append(kernel.ravel() /
                                                                        np.sqrt(2 / fan_out))
  assert len(normalised["conv"]) == 4  # expand, squeeze, excite, project
  for kind, draws in normalised.items():
    draws = np.concatenate(draws)
    assert abs(draws.std() - 1) < 0.03, kind  # the variance; truncated at 2 / 0.8796:
    assert 2.2 < np.abs(draws).max() <= 2 / 0.87962566 + 1e-6, kind
