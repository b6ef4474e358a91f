"""Hessian analyses and m-sharpness against exact oracles: jax.hessian + numpy.linalg.eigh,
closed forms in float64; a run's TensorBoard scalars read back and drawn."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from sklearn.datasets import load_digits

from sam_jax import events, replicas
from sam_jax.analysis import hessian, loss, plots, report, sharpness

NUM_EXAMPLES = 250  # two batches of 128 over 8 devices, the last padded with 6 masked rows


class TinyCNN(nn.Module):
  """A convnet with BatchNorm small enough (about 500 parameters) for jax.hessian."""
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(6, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
    x = nn.relu(x)
    x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
    return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="session")  # once per worker (pytest-xdist shares tests out)
def trained():
  """The tiny CNN after 150 Adam steps on 250 digits: a trained point, as analyses see."""
  digits = load_digits()
  examples = {
      "image": (digits.images[:NUM_EXAMPLES, :, :, None] / 8.0 - 1.0).astype(np.float32),
      "label": digits.target[:NUM_EXAMPLES].astype(np.int32)
  }
  model = TinyCNN()
  variables = model.init(jax.random.key(0), examples["image"][:1], train=False)
  tx = optax.adam(0.02)

  @jax.jit
  def step(variables, opt_state):
    def train_loss(params):
      logits, updates = model.apply({
          **variables, "params": params
      }, examples["image"], train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             examples["label"]).mean(), updates

    grads, updates = jax.grad(train_loss, has_aux=True)(variables["params"])
    new_params = optax.apply_updates(variables["params"], tx.update(grads, opt_state)[0])
    return {"params": new_params, **updates}, tx.update(grads, opt_state)[1]

  opt_state = tx.init(variables["params"])
  for _ in range(150):
    variables, opt_state = step(variables, opt_state)
  return model, variables, examples


@pytest.fixture(scope="session")  # once per worker (pytest-xdist shares tests out)
def exact(trained):
  """The full Hessian of the mean eval-mode loss, by jax.hessian (reverse-over-forward)."""
  model, variables, examples = trained
  flat, unravel = ravel_pytree(variables["params"])
  loss_fn = loss.example_loss_fn(model, variables["batch_stats"])
  mean_loss = lambda w: jnp.mean(loss_fn(unravel(w), examples))
  matrix = np.asarray(jax.jit(jax.hessian(mean_loss))(flat), np.float64)
  matrix = (matrix + matrix.T) / 2
  return matrix, np.linalg.eigvalsh(matrix)


@pytest.fixture(scope="session")  # once per worker (pytest-xdist shares tests out)
def hvp(trained):
  model, variables, examples = trained
  loss_fn = loss.example_loss_fn(model, variables["batch_stats"])
  return hessian.dataset_hvp(loss_fn, variables["params"], loss.padded_batches(examples, 128))


def relative(a, b):
  return np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))


def test_sharded_hvp_over_padded_batches_is_the_exact_hessian_times_v(exact, hvp):
  product, dim = hvp
  matrix, _ = exact
  assert jax.device_count() == 8 and dim == len(matrix)
  v = np.random.default_rng(0).normal(size=dim)
  expected = matrix @ v
  got = np.asarray(product(jnp.asarray(v, jnp.float32)), np.float64)
  assert np.linalg.norm(got - expected) < 1e-4 * np.linalg.norm(expected)


def test_lanczos_and_power_iteration_recover_the_top_eigenvalues(exact, hvp):
  product, dim = hvp
  _, eigenvalues = exact
  assert eigenvalues[-1] > 2 * eigenvalues[-2] > 0  # a trained point: a clear top eigenvalue
  top = eigenvalues[::-1][:5]
  lanczos_top = hessian.top_eigenvalues(product, dim, 5, jax.random.key(1), num_steps=80)
  assert relative(lanczos_top, top).max() < 1e-3, (lanczos_top, top)

  by_magnitude = eigenvalues[np.argsort(-np.abs(eigenvalues))][:3]
  values, vectors = hessian.power_iteration(product, dim, 3, jax.random.key(2), max_iterations=1000,
                                            tolerance=1e-7)
  assert relative(values, by_magnitude).max() < 1e-3, (values, by_magnitude)
  np.testing.assert_allclose(vectors @ vectors.T, np.eye(3), atol=1e-4)


@pytest.mark.slow  # 13 s: 2,400 probes
def test_hutchinson_trace_is_within_5_percent_of_the_exact_trace(exact, hvp):
  product, dim = hvp
  matrix, _ = exact
  trace = np.trace(matrix)
  # Var(z^T H z) = 2 sum_{i != j} H_ij^2 for Rademacher z: the standard error of the mean.
  probes = 2400
  expected_error = np.sqrt(2 * (np.sum(matrix ** 2) - np.sum(np.diag(matrix) ** 2)) / probes)
  assert expected_error < 0.0125 * trace  # so that 5% is four standard errors
  estimate, error = hessian.hutchinson_trace(product, dim, jax.random.key(3), num_probes=probes,
                                             probes_at_once=400)
  assert abs(estimate - trace) < 0.05 * trace
  assert 0.7 < error / expected_error < 1.3


def test_slq_density_integrates_to_one_and_its_quadrature_is_exact(exact, hvp):
  product, dim = hvp
  matrix, eigenvalues = exact
  key = jax.random.key(4)
  density = hessian.spectral_density(product, dim, key, num_vectors=2, num_steps=30)
  assert abs(np.trapezoid(density.density, density.grid) - 1) < 1e-3
  assert density.density.min() >= 0
  np.testing.assert_allclose(density.weights.sum(axis=1), 1, atol=1e-5)
  assert relative(density.lambda_max, eigenvalues[-1]) < 1e-3
  # Gauss quadrature with 30 nodes integrates polynomials up to degree 59 exactly:
  # sum_j tau_j theta_j^p = v^T H^p v / v^T v for the start vector v.
  v = np.asarray(hessian.rademacher(jax.random.fold_in(key, 0), dim), np.float64)
  for power in (1, 2, 3):
    exact_moment = v @ np.linalg.matrix_power(matrix, power) @ v / (v @ v)
    quadrature = np.sum(density.weights[0] * density.nodes[0] ** power)
    assert relative(quadrature, exact_moment) < 1e-3, power


def test_train_mode_batch_norm_hvp_matches_reverse_over_reverse(trained):
  model, variables, examples = trained
  batch = {k: v[:128] for k, v in examples.items()}
  loss_fn = loss.example_loss_fn(model, variables["batch_stats"], train_batch_norm=True)
  product, dim = hessian.dataset_hvp(loss_fn, variables["params"], [batch], replicas.make_mesh(1))
  flat, unravel = ravel_pytree(variables["params"])
  v = jnp.asarray(np.random.default_rng(1).normal(size=dim), jnp.float32)
  grad = jax.grad(lambda w: jnp.mean(loss_fn(unravel(w), batch)))
  expected = jax.grad(lambda w: jnp.vdot(grad(w), v))(flat)
  np.testing.assert_allclose(product(v), expected, rtol=1e-4, atol=1e-5 * jnp.abs(expected).max())
  eval_product, _ = hessian.dataset_hvp(
      loss.example_loss_fn(model, variables["batch_stats"]), variables["params"], [batch],
      replicas.make_mesh(1))
  assert jnp.linalg.norm(eval_product(v) - product(v)) > 1e-3 * jnp.linalg.norm(expected)


def squared_loss(params, batch):
  return 0.5 * (batch["image"] @ params["w"] - batch["label"]) ** 2


@pytest.mark.parametrize("m", [1, 4, 16])
def test_m_sharpness_of_a_least_squares_model_is_its_closed_form(m):
  rng = np.random.default_rng(m)
  x, y, w = rng.normal(size=(128, 5)), rng.normal(size=128), rng.normal(size=5)
  examples = {"image": x.astype(np.float32), "label": y.astype(np.float32)}
  # Two points and radii through the same (cached) program: each its own closed form.
  for point, rho in ((w, 0.3), (-0.5 * w, 0.1)):
    # L_s(w + eps) - L_s(w) = g^T eps + eps^T H_s eps / 2 with eps = rho g / ||g||.
    expected = 0.0
    for start in range(0, 128, m):
      xs, ys = x[start:start + m], y[start:start + m]
      g = xs.T @ (xs @ point - ys)
      expected += rho * np.linalg.norm(g) + 0.5 * rho ** 2 * g @ xs.T @ xs @ g / (g @ g)
    got = sharpness.m_sharpness(squared_loss, {"w": jnp.asarray(point, jnp.float32)}, examples, m,
                                rho, batch_size=32)
    assert relative(got, expected / 128) < 1e-4


def test_m_sharpness_refuses_a_count_that_does_not_split_into_subsets():
  examples = {"image": np.zeros((100, 5), np.float32), "label": np.zeros(100, np.float32)}
  with pytest.raises(ValueError, match="m=16 over 8 devices needs a multiple of 128"):
    sharpness.m_sharpness(squared_loss, {"w": jnp.zeros(5)}, examples, 16, 0.1)


def test_scalars_are_read_back_a_later_file_winning_and_drawn_as_training_curves(tmp_path):
  # pylint: disable=import-outside-toplevel
  from clu import metric_writers
  from tensorboard.compat.proto import event_pb2, summary_pb2
  from sam_jax.data.tf_cpu import tf
  assert report.write_training_curves(str(tmp_path), str(tmp_path / "out"), "none") is None
  first = metric_writers.create_default_writer(str(tmp_path), asynchronous=False)
  first.write_scalars(1, {"train_loss": 2.0, "learning_rate": 0.5})
  first.write_scalars(2, {"train_loss": 1.0, "test_error": 0.75})
  first.write_texts(2, {"note": "not a scalar"})
  first.close()
  resumed = metric_writers.create_default_writer(str(tmp_path), asynchronous=False)  # from 1
  resumed.write_scalars(2, {"train_loss": 0.25, "test_loss": 1.5})
  resumed.close()
  # A TF1-style event (value.simple_value), in a file whose name sorts last.
  value = summary_pb2.Summary.Value(tag="learning_rate", simple_value=0.125)
  with tf.io.TFRecordWriter(str(tmp_path / "events.out.tfevents.9999999999.simple")) as f:
    f.write(event_pb2.Event(step=1, summary=summary_pb2.Summary(value=[value])).SerializeToString())
  scalars = events.read_scalars(str(tmp_path))
  assert scalars == {
      "train_loss": {
          1: 2.0,
          2: 0.25
      },
      "learning_rate": {
          1: 0.125
      },
      "test_error": {
          2: 0.75
      },
      "test_loss": {
          2: 1.5
      }
  }
  path = tmp_path / "curves.png"
  plots.training_curves(scalars, str(path), "a run")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
  assert report.write_training_curves(str(tmp_path), str(tmp_path / "out"),
                                      "a run") == str(tmp_path / "out" / "training_curves.png")
  assert plots.trained_with(0.0) == "trained with SGD (rho = 0)"
  assert plots.trained_with(0.05) == "trained with SAM rho = 0.05"
