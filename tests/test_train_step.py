"""The per-replica SAM step over devices and virtual replicas (8 CPU devices)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import max_abs_diff, tiny_config
from sam_jax import losses, optim, replicas, run_setup, steps
from sam_jax.errors import UsageError
from sam_jax.models import get_model
from sam_jax.models.shake_shake import shake_shake
from sam_jax.sam import cross_replica_mean, group_mean

IMAGE = (8, 8, 3)
# Depth 10: deeper nets on 8x8 inputs (BatchNorm over 2x2 maps) amplify float rounding
# from step to step, so layouts that agree to 1e-7 after one step drift apart after three.
TINY_WRN = "WideResnet10x1"


def make_config(rho=0.05, sync=False, clip=5.0, momentum=0.9, weight_decay=5e-4, group=None):
  """The default schema with a 10-step cosine schedule (1 epoch of 10 steps)."""
  return tiny_config(learning_rate=0.1, num_epochs=1, momentum=momentum, weight_decay=weight_decay,
                     gradient_clipping=clip, sam=dict(rho=rho, sync_perturbations=sync,
                                                      sync_group_size=group))


def batches(num=3, seed=0, size=64):
  rng = np.random.default_rng(seed)
  return [{
      "image": rng.standard_normal((size,) + IMAGE, np.float32),
      "label": rng.integers(0, 10, size).astype(np.int32)
  } for _ in range(num)]


def train(model, config, num_devices, m, data, replica_mapping="loop", **step_options):
  """Runs len(data) steps; returns the initial and final states (numpy), the last metrics."""
  layout = replicas.make_layout(len(data[0]["label"]), m, num_devices)
  mesh = replicas.make_mesh(num_devices)
  tx = optim.create_optimizer(config, 10, replicas.REPLICA_AXES)
  state = replicas.replicate(steps.init_train_state(model, tx, jax.random.key(0), IMAGE), mesh)
  initial = jax.tree.map(np.asarray, state)  # the step donates (deletes) its input
  step = steps.make_train_step(model, tx, mesh, layout, l2_weight_decay=config.weight_decay,
                               replica_mapping=replica_mapping, **step_options)
  for batch in data:
    state, metrics = step(state, replicas.shard_batch(batch, mesh), jax.random.key(1))
  return initial, jax.tree.map(np.asarray, state), jax.tree.map(float, metrics)


def test_layouts_of_the_same_replicas_agree_and_m_matters():
  """4 replicas of m = 8 on 4 devices, or on 2 devices x 2 virtual replicas: the same run;
  one replica of m = 32 (one perturbation for the whole batch): another."""
  model, config, data = get_model(TINY_WRN, 10), make_config(), batches(size=32)
  (wide, wide_metrics), (mixed, mixed_metrics), (
      whole,
      _) = (train(model, config, devices, m, data)[1:] for devices, m in ((4, 8), (2, 8), (1, 32)))
  assert max_abs_diff(wide.params, mixed.params) < 1e-5
  assert max_abs_diff(wide.batch_stats, mixed.batch_stats) < 1e-5
  assert int(mixed.step) == 3
  assert max_abs_diff(wide_metrics, mixed_metrics) < 1e-5  # replica averages (next test)
  assert max_abs_diff(wide.params, whole.params) > 1e-3  # m-sharpness: m changes the step


@pytest.mark.slow
def test_sampa_on_two_devices_is_sampa_on_two_virtual_replicas():
  """The pair of replicas on 2 devices or as 2 virtual replicas of one: the same run (the
  replica index and the group sums read the same under shard_map and vmap)."""
  model, config, data = get_model(TINY_WRN, 10), make_config(), batches(num=2, size=16)
  config.sam.variant = "sampa"
  (two, _), (one, _) = (
      train(model, config, devices, 8, data, clean_gradient=False)[1:] for devices in (2, 1))
  assert max_abs_diff(two.params, one.params) < 1e-5


def test_metrics_are_the_replica_averages_at_w_and_at_w_plus_eps():
  """One step of 4 replicas (2 devices x 2 virtual, m = 4) against a per-replica loop:
  loss and error at w and at w + eps_r, ||g_r||, and the norm of the mean SAM gradient
  (the original's gradient_norm, flax_training.py:573-583: after the mean and clipping)."""
  model, rho, data = DropoutNet(rate=0.0), 0.5, batches(1, seed=8, size=16)
  initial, _, metrics = train(model, make_config(rho=rho, weight_decay=0.0), 2, 4, data)
  variables = {"params": initial.params, "batch_stats": initial.batch_stats}

  def loss_and_logits(params, images, labels):
    logits, _ = model.apply({
        **variables, "params": params
    }, images, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

  pass_ = jax.value_and_grad(loss_and_logits, has_aux=True)
  per_replica, sam_grads = [], []
  for r in range(4):
    images, labels = data[0]["image"][4 * r:4 * r + 4], data[0]["label"][4 * r:4 * r + 4]
    (loss, logits), grads = pass_(variables["params"], images, labels)
    norm = optax.tree_utils.tree_norm(grads)
    perturbed = jax.tree.map(lambda w, g: w + rho * g / norm, variables["params"], grads)
    (sam_loss, sam_logits), sam_grad = pass_(perturbed, images, labels)
    sam_grads.append(sam_grad)
    per_replica.append({
        "loss": loss,
        "error": np.mean(np.argmax(logits, -1) != labels),
        "perturbed_loss": sam_loss,
        "perturbed_error": np.mean(np.argmax(sam_logits, -1) != labels),
        "clean_grad_norm": norm
    })
  expected = {k: float(np.mean([float(r[k]) for r in per_replica])) for k in per_replica[0]}
  expected["grad_norm"] = float(
      optax.tree_utils.tree_norm(jax.tree.map(lambda *g: sum(g) / 4,
                                              *sam_grads)))  # below the clip of 5
  expected["nonfinite"] = 0.0
  assert set(metrics) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(metrics[name], value, rtol=2e-5, err_msg=name)
  assert expected["perturbed_loss"] > expected["loss"] + 0.05  # w + eps is really worse
  assert expected["clean_grad_norm"] > 1.5 * expected["grad_norm"]  # mean of norms differs


def test_synchronised_perturbations_reproduce_m_equal_global_batch():
  # BatchNorm must see the global batch too, so it is synchronised across replicas.
  synced_bn = get_model(TINY_WRN, 10, bn_axis_name=replicas.REPLICA_AXES)
  data = batches(2, seed=1, size=16)
  _, whole, _ = train(synced_bn, make_config(), 1, 16, data, replica_mapping="vmap")
  _, synced, _ = train(synced_bn, make_config(sync=True), 2, 4, data, replica_mapping="vmap")
  # Without the sync, the four replicas' own perturbations would differ from the whole
  # batch's (test_layouts_of_the_same_replicas_agree_and_m_matters).
  assert max_abs_diff(synced.params, whole.params) < 1e-5


def test_perturbation_groups_of_one_are_no_sync_and_of_all_are_full_sync():
  # The original's --inner_group_size (flax_training.py:539-545): replicas per shared
  # perturbation. 4 replicas (2 devices x 2 virtual) of m = 4.
  model, data = DropoutNet(rate=0.0), batches(1, seed=9, size=16)  # the layout matters
  params = {
      name: train(model, make_config(sync=sync, group=group), 2, 4, data)[1].params
      for name, sync, group in (("none", False, None), ("1", True, 1), ("2", True, 2),
                                ("4", True, 4), ("all", True, None))
  }
  assert max_abs_diff(params["1"], params["none"]) < 1e-6
  assert max_abs_diff(params["4"], params["all"]) < 1e-6
  assert min(max_abs_diff(params["2"], params[other]) for other in ("none", "all")) > 1e-4
  with pytest.raises(UsageError, match="sam.sync_group_size=3 does not divide the 4 replicas"):
    replicas.check_group_size(replicas.make_layout(16, 4, 2), 3)


def test_group_mean_averages_consecutive_replicas_of_a_flattened_axis_tuple():
  x = np.arange(8.0) ** 2
  grouped = jax.vmap(
      jax.vmap(lambda v: group_mean(v, ("a", "b"), 2), axis_name="b"), axis_name="a")(
          x.reshape(2, 4))
  np.testing.assert_allclose(grouped.ravel(), np.repeat(x.reshape(4, 2).mean(1), 2))
  plain = jax.vmap(lambda v: group_mean(v, "i"), axis_name="i")(x)
  np.testing.assert_allclose(plain, np.full(8, x.mean()))


def test_replica_mappings_agree():
  """The unrolled loop, the scan (gradient accumulation) and plain vmap: one step of 4
  replicas of m = 4."""
  model, config, data = get_model(TINY_WRN, 10), make_config(), batches(1, seed=2, size=16)
  runs = {
      mapping: train(model, config, 1, 4, data, replica_mapping=mapping)[1:]
      for mapping in replicas.MAPPINGS
  }
  for mapping in ("scan", "vmap"):
    assert max_abs_diff(runs["loop"][0].params, runs[mapping][0].params) < 1e-5, mapping
    assert max_abs_diff(runs["loop"][0].batch_stats, runs[mapping][0].batch_stats) < 1e-5
    assert max_abs_diff(runs["loop"][1], runs[mapping][1]) < 1e-5


def test_batch_norm_statistics_come_from_the_clean_pass_only():
  model, data = get_model(TINY_WRN, 10), batches(1, seed=3, size=16)
  _, plain, _ = train(model, make_config(rho=0.0), 1, 16, data)
  _, sharp, _ = train(model, make_config(rho=2.0), 1, 16, data)
  assert max_abs_diff(plain.params, sharp.params) > 1e-3  # the SAM pass did matter
  assert max_abs_diff(plain.batch_stats, sharp.batch_stats) < 1e-6


class DropoutNet(nn.Module):
  """Dense-BN-ReLU-Dropout-Dense: with rate 0.5, randomness that matters a lot."""
  rate: float = 0.5

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(32)(x.reshape((x.shape[0], -1)))
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.Dropout(self.rate, deterministic=not train)(x)
    return nn.Dense(10)(x)


class ShakeNet(nn.Module):
  """Two dense branches mixed by shake-shake: uniform draws and no Bernoulli mask."""
  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(10)(shake_shake(self, nn.Dense(16)(x), nn.Dense(16)(x), train, False))


def test_both_sam_passes_see_the_same_dropout_mask():
  # With a tiny rho the SAM gradient must be nearly the clean one; a fresh dropout
  # mask in the second pass would change it by O(1).
  data = batches(1, seed=4, size=16)
  initial, clean, _ = train(DropoutNet(), make_config(rho=0.0), 2, 8, data)
  _, tiny, _ = train(DropoutNet(), make_config(rho=1e-5), 2, 8, data)
  assert max_abs_diff(clean.params, initial.params) > 1e-2
  assert max_abs_diff(clean.params, tiny.params) < 1e-5
  # The original's stateful Bernoulli (its train.py:76-82): a new mask in the SAM pass.
  _, redrawn, _ = train(DropoutNet(), make_config(rho=1e-5), 2, 8, data, redraw_masks=True)
  assert max_abs_diff(clean.params, redrawn.params) > 1e-3


def test_redrawn_masks_keep_the_shake_coefficients():
  # Shake-Shake has no Bernoulli mask: redrawing masks must not change its SAM step.
  model, data = ShakeNet(), batches(1, seed=10, size=16)
  _, shared, _ = train(model, make_config(rho=0.5), 1, 16, data)
  _, redrawn, _ = train(model, make_config(rho=0.5), 1, 16, data, redraw_masks=True)
  assert max_abs_diff(shared.params, redrawn.params) < 1e-6


def functional_probe(shift):
  """A transformation whose update is Functional-SAM's gradient at params + shift."""
  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    del updates, extra_args
    return grad_fn(jax.tree.map(lambda w, d: w + d, params, shift), functional=True), state

  return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)


def test_functional_gradient_is_the_jacobian_at_p_and_dl_dlogits_at_w():
  """grad_fn(p, functional=True) on each of 2 virtual replicas: J_F(p)^T dL/dF(F(w)) plus
  the L2 penalty's gradient at p, with label smoothing and BatchNorm in training mode; at
  p = w it is the clean gradient, and away from w it is not SAM's gradient."""
  model, batch, wd, smoothing = DropoutNet(rate=0.0), batches(1, seed=12, size=16)[0], 5e-4, 0.1
  mesh, layout = replicas.make_mesh(1), replicas.make_layout(16, 8, 1)

  def step_update(tx):
    """w - w' after one step of chain(tx, replica mean, sgd(1)), and the state before it."""
    tx = optax.chain(tx, cross_replica_mean(replicas.REPLICA_AXES), optax.sgd(1.0))
    state = steps.init_train_state(model, tx, jax.random.key(0), IMAGE)
    initial = jax.tree.map(np.asarray, state)
    step = steps.make_train_step(model, tx, mesh, layout, l2_weight_decay=wd,
                                 label_smoothing=smoothing)
    new, _ = step(
        replicas.replicate(state, mesh), replicas.shard_batch(batch, mesh), jax.random.key(1))
    return jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, initial.params,
                        new.params), initial

  clean, state = step_update(optax.identity())
  shift = jax.tree.map(lambda w: 0.3 * np.sign(np.sin(np.arange(w.size) + 1.0)).reshape(w.shape),
                       state.params)

  def logits(p, x):
    return model.apply({
        "params": p,
        "batch_stats": state.batch_stats
    }, x, train=True, mutable=["batch_stats"])[0]

  def expected(p, sam=False):
    per_replica = []
    for half in (slice(0, 8), slice(8, 16)):
      x, y = batch["image"][half], batch["label"][half]
      loss = lambda z: jnp.mean(losses.cross_entropy(z, y, smoothing))
      cotangent = jax.grad(loss)(logits(p if sam else state.params, x))
      _, vjp = jax.vjp(lambda q: logits(q, x), p)
      per_replica.append(jax.tree.map(lambda g, w: g + wd * w, vjp(cotangent)[0], p))
    return jax.tree.map(lambda a, b: (np.asarray(a, np.float64) + b) / 2, *per_replica)

  zero = jax.tree.map(np.zeros_like, shift)
  (at_w, _), (away, _) = (step_update(functional_probe(d)) for d in (zero, shift))
  moved = jax.tree.map(lambda w, d: w + d, state.params, shift)
  assert max_abs_diff(at_w, clean) < 1e-6  # the clean gradient
  assert max_abs_diff(at_w, expected(state.params)) < 1e-6
  assert max_abs_diff(away, expected(moved)) < 1e-6
  assert max_abs_diff(away, expected(moved, sam=True)) > 1e-3  # the logit path is gone


def test_gradients_are_averaged_across_replicas_before_clipping():
  # Clipping the mean gives an update of norm exactly lr * clip; clipping each replica
  # first and then averaging would give less.
  config = make_config(clip=1e-3, momentum=0.0, weight_decay=0.0)
  initial, final, metrics = train(
      get_model(TINY_WRN, 10), config, 2, 4, batches(1, seed=5, size=16))
  np.testing.assert_allclose(metrics["grad_norm"], 1e-3, rtol=1e-5)  # logged after clipping
  step_norm = float(
      optax.tree_utils.tree_norm(
          jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, final.params, initial.params)))
  np.testing.assert_allclose(step_norm, config.learning_rate * 1e-3, rtol=1e-4)


@pytest.mark.parametrize("batch, m, devices, message", [
    (100, None, 8, "global batch of 100 does not split over 8 devices"),
    (64, 3, 8, "m=3 examples per replica does not divide the per-device batch of 8"),
    (64, 16, 8, "m=16 examples per replica does not divide the per-device batch of 8"),
])
def test_batches_that_do_not_split_into_replicas_are_clear_errors(batch, m, devices, message):
  with pytest.raises(UsageError, match=message):
    replicas.make_layout(batch, m, devices)


def test_more_devices_than_exist_is_a_clear_error():
  with pytest.raises(UsageError, match="Asked for 9 devices but only 8 are visible"):
    replicas.make_mesh(9)


def test_layout_arithmetic():
  layout = replicas.make_layout(256, 32, 2)
  assert (layout.num_devices, layout.virtual_replicas, layout.examples_per_replica) == (2, 4, 32)
  assert (layout.num_replicas, layout.per_device_batch, layout.global_batch) == (8, 128, 256)
  assert replicas.make_layout(256, None, 8).examples_per_replica == 32  # original default


def test_paired_layouts_put_the_previous_and_the_current_batch_on_alternate_replicas():
  """SAMPa's layout: twice the batch, one device -> two replicas of the batch, more devices
  -> one replica each (of at most the batch)."""
  shape = lambda layout: (layout.num_devices, layout.virtual_replicas, layout.examples_per_replica)
  assert shape(replicas.make_layout(64, None, 1, paired=True)) == (1, 2, 64)
  assert shape(replicas.make_layout(64, None, 2, paired=True)) == (2, 1, 64)
  assert shape(replicas.make_layout(64, None, 8, paired=True)) == (8, 1, 16)
  assert shape(replicas.make_layout(64, 32, 2, paired=True)) == (2, 2, 32)
  with pytest.raises(
      UsageError, match="m=48 examples per replica does not divide the batch of 64 "
      "that a process pairs"):
    replicas.make_layout(64, 48, 1, paired=True)
  stream = [{"x": np.arange(4) + 10 * i} for i in range(4)]  # batches of 4, m = 2
  paired = [b["x"].tolist() for b in replicas.paired_batches(stream, 2)]
  assert paired[:2] == [[0, 1, 0, 1, 2, 3, 2, 3], [0, 1, 10, 11, 2, 3, 12, 13]]
  # A resumed run reads from the step before: the same pairs from there on.
  fake = lambda start_step: ({"x": np.arange(4) + 10 * i} for i in range(start_step, 4))
  for start in (1, 2):
    resumed = [b["x"].tolist() for b in run_setup.paired_batches(fake, 2, start_step=start)]
    assert resumed == paired[start:]


def test_prefetch_places_the_next_batch_while_one_is_used_in_order():
  mesh, pulled = replicas.make_mesh(4), []

  def source():
    for i in range(5):
      pulled.append(i)
      yield {"image": np.full((8, 2), i, np.float32)}

  prefetched = replicas.prefetch_to_devices(source(), mesh)
  first = next(prefetched)
  assert pulled == [0, 1]  # the batch yielded and the next one, already on the devices
  assert first["image"].sharding == replicas.batch_sharding(mesh)
  rest = [int(batch["image"][0, 0]) for batch in prefetched]
  assert int(first["image"][7, 1]) == 0 and rest == [1, 2, 3, 4]


def test_eval_step_counts_only_unmasked_examples():
  model = get_model(TINY_WRN, 10)
  mesh = replicas.make_mesh(8)
  tx = optim.create_optimizer(make_config(), 10, replicas.REPLICA_AXES)
  state = replicas.replicate(steps.init_train_state(model, tx, jax.random.key(0), IMAGE), mesh)
  batch = dict(batches(1, seed=7)[0], mask=np.r_[np.ones(50), np.zeros(14)].astype(np.float32))
  sums = steps.make_eval_step(model, mesh, label_smoothing=0.1)(state,
                                                                replicas.shard_batch(batch, mesh))
  logits = model.apply({
      "params": state.params,
      "batch_stats": state.batch_stats
  }, batch["image"][:50], train=False)
  assert float(sums["count"]) == 50
  assert int(sums["error"]) == int(np.sum(np.argmax(logits, -1) != batch["label"][:50]))
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"][:50]).sum()
  np.testing.assert_allclose(float(sums["loss"]), float(loss), rtol=1e-5)
  # The original's evaluation loss smooths the targets (flax_training.py:239-248):
  # -sum(((1 - a) onehot + a / K) log_softmax), here in float64.
  log_p = np.asarray(jax.nn.log_softmax(np.asarray(logits, np.float64)))
  targets = 0.9 * np.eye(10)[batch["label"][:50]] + 0.01
  np.testing.assert_allclose(float(sums["smoothed_loss"]), -(targets * log_p).sum(), rtol=1e-5)


def test_cross_entropy_takes_class_indices_or_soft_mixup_targets():
  logits = jnp.array(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  soft = jnp.array([[0.7, 0.3, 0, 0], [0, 0, 1.0, 0], [0.25, 0, 0, 0.75]], jnp.float32)
  log_p = np.log(np.exp(np.float64(logits)) / np.exp(np.float64(logits)).sum(-1, keepdims=True))
  np.testing.assert_allclose(losses.cross_entropy(logits, soft), -(soft * log_p).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(
      losses.cross_entropy(logits, jnp.array([0, 2, 3])), -log_p[[0, 1, 2], [0, 2, 3]], rtol=1e-5)
  smoothed = 0.9 * np.asarray(soft) + 0.1 / 4
  np.testing.assert_allclose(
      losses.cross_entropy(logits, soft, 0.1), -(smoothed * log_p).sum(-1), rtol=1e-5)
  assert losses.hard_labels(soft).tolist() == [0, 2, 3]


def test_sigmoid_cross_entropy_is_a_binary_one_per_class_summed():
  # big_vision utils.py:236-243 in float64: -sum_k [t log s(z) + (1 - t) log(1 - s(z))].
  logits = np.random.default_rng(1).normal(size=(3, 4)) * 4
  targets = 0.9 * np.eye(4)[[0, 2, 3]] + 0.1 / 4
  p = 1 / (1 + np.exp(-logits))
  expected = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(-1)
  ours = losses.cross_entropy(jnp.array(logits, jnp.float32), jnp.array([0, 2, 3]), 0.1, "sigmoid")
  np.testing.assert_allclose(ours, expected, rtol=1e-5)
  # Finite where the naive form overflows: a head initialised at -10 and beyond.
  assert np.isfinite(
      losses.cross_entropy(jnp.full((1, 4), -200.0), jnp.array([1]), kind="sigmoid")).all()
