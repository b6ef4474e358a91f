"""The optimizer from a config: schedules, weight decay, EMA, kept-forever checkpoints."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import max_abs_diff, tiny_config
from sam_jax import checkpoints, optim, replicas, run_setup, steps

STEPS_PER_EPOCH = 10


def make_config(**overrides):
  """Plain SGD at 0.4 for 5 epochs: no momentum, decay, clipping or SAM unless asked."""
  config = tiny_config(learning_rate=0.4, num_epochs=5, momentum=0.0, nesterov=False,
                       weight_decay=0.0, gradient_clipping=0.0, sam=dict(rho=0.0))
  config.update(overrides)
  return config


def schedule_values(**overrides):
  schedule = optim.learning_rate_schedule(make_config(**overrides), STEPS_PER_EPOCH)
  return np.array([float(schedule(t)) for t in range(5 * STEPS_PER_EPOCH + 1)])


def test_cosine_schedule_is_the_closed_form():
  t = np.arange(51)
  np.testing.assert_allclose(schedule_values(), 0.2 * (1 + np.cos(np.pi * t / 50)), atol=1e-6)


def test_warmup_rises_linearly_from_zero_then_follows_cosine():
  values = schedule_values(warmup_epochs=1.0)
  np.testing.assert_allclose(values[:10], 0.4 * np.arange(10) / 10, atol=1e-6)
  after = np.arange(41)
  np.testing.assert_allclose(values[10:], 0.2 * (1 + np.cos(np.pi * after / 40)), atol=1e-6)


@pytest.mark.parametrize("num_epochs", [5, 3])
def test_exponential_schedule_is_the_originals_and_is_finite(num_epochs):
  # google-research/sam flax_training.py:369-372 and :417-418 in float64:
  # lr * exp(-t / lambda), t = step / steps_per_epoch, lambda = -num_epochs / ln(0.012).
  values = schedule_values(lr_schedule="exponential", num_epochs=num_epochs)
  t = np.arange(51, dtype=np.float64) / STEPS_PER_EPOCH
  expected = 0.4 * np.exp(-t / (-num_epochs / math.log(0.012)))
  np.testing.assert_allclose(values, expected, rtol=1e-5)  # the original was NaN at step 0
  assert values[num_epochs * STEPS_PER_EPOCH] == pytest.approx(0.4 * 0.012, rel=1e-5)


def test_exponential_schedule_after_a_warmup_runs_over_the_remaining_steps():
  values = schedule_values(lr_schedule="exponential", warmup_epochs=0.5)
  np.testing.assert_allclose(values[:5], 0.4 * np.arange(5) / 5, atol=1e-6)
  np.testing.assert_allclose(values[5:], 0.4 * 0.012 ** (np.arange(46) / 45), rtol=1e-5)


def test_no_schedule_is_constant():
  np.testing.assert_allclose(schedule_values(use_learning_rate_schedule=False), 0.4)


PARAMS = {
    "conv": {
        "kernel": jnp.full((3, 3), 2.0),
        "bias": jnp.full((3,), 4.0)
    },
    "bn": {
        "scale": jnp.full((3,), -1.0)
    }
}
GRADS = jax.tree.map(lambda w: jnp.full_like(w, 0.5), PARAMS)


def one_update(config):
  """One optimizer update on PARAMS, as a single replica of a named axis."""
  tx = optim.create_optimizer(config, STEPS_PER_EPOCH, ("r",))

  def update(params, grads):
    updates, _ = tx.update(grads, tx.init(params), params, grad_fn=lambda p: grads)
    return updates

  add_axis = lambda tree: jax.tree.map(lambda x: x[None], tree)
  return jax.tree.map(lambda u: u[0],
                      jax.vmap(update, axis_name="r")(add_axis(PARAMS), add_axis(GRADS)))


@pytest.mark.parametrize("no_weight_decay_on_bn", [False, True])
def test_decoupled_weight_decay_adds_wd_times_w_outside_the_gradient(no_weight_decay_on_bn):
  config = make_config(weight_decay=0.1, weight_decay_type="decoupled",
                       no_weight_decay_on_bn=no_weight_decay_on_bn,
                       use_learning_rate_schedule=False)
  updates = one_update(config)
  for path, w in jax.tree_util.tree_leaves_with_path(PARAMS):
    u = updates[path[0].key][path[1].key]
    decayed = w.ndim > 1 or not no_weight_decay_on_bn
    np.testing.assert_allclose(u, -0.4 * (0.5 + (0.1 * w if decayed else 0.0)), rtol=1e-6)


def test_l2_weight_decay_is_half_wd_squared_norm_over_the_mask():
  mask = optim.weight_decay_mask(PARAMS, no_weight_decay_on_bn=True)
  assert float(optim.l2_penalty(PARAMS, 0.1, mask)) == pytest.approx(0.5 * 0.1 * 9 * 4.0)
  mask = optim.weight_decay_mask(PARAMS, no_weight_decay_on_bn=False)
  assert float(optim.l2_penalty(PARAMS, 0.1, mask)) == pytest.approx(0.05 * (36 + 48 + 3))


class BatchNormMLP(nn.Module):
  """Dense-BatchNorm-ReLU-Dense: parameters and statistics for the EMA, compiled fast."""
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
    return nn.Dense(10)(nn.relu(nn.BatchNorm(use_running_average=not train)(x)))


def test_ema_is_the_originals_warmup_then_capped_tf_decay():
  # google-research/sam sam_jax/efficientnet/optim.py:276-282, called after each update
  # with the optimizer's step count (flax_training.py:788-790):
  #   decay = [step >= warmup] * min(decay, (1 + step - warmup) / (10 + step - warmup)).
  # Warmup 2, decay 0.2: steps 1..4 use 0, 1/10, 2/11, then the cap 0.2 (not 3/12).
  model, image = BatchNormMLP(), (8, 8, 3)
  config = make_config(learning_rate=0.1, momentum=0.9, sam=dict(rho=0.05))
  layout, mesh = replicas.make_layout(16, 8, 1), replicas.make_mesh(1)
  tx = optim.create_optimizer(config, STEPS_PER_EPOCH, replicas.REPLICA_AXES)
  state = replicas.replicate(
      steps.init_train_state(model, tx, jax.random.key(0), image, ema=True), mesh)
  step = steps.make_train_step(model, tx, mesh, layout, ema_decay=0.2, ema_warmup_steps=2)
  rng = np.random.default_rng(0)
  history = []  # the step donates (deletes) its input
  for _ in range(4):
    batch = {
        "image": rng.standard_normal((16,) + image, np.float32),
        "label": rng.integers(0, 10, 16).astype(np.int32)
    }
    state, _ = step(state, replicas.shard_batch(batch, mesh), jax.random.key(1))
    history.append(jax.tree.map(lambda x: np.asarray(x, np.float64), state))
  for part in ("params", "batch_stats"):
    expected = None
    for count, after in enumerate(history, start=1):
      delta = count - 2
      decay = float(count >= 2) * min(0.2, (1.0 + delta) / (10.0 + delta))
      new = getattr(after, part)
      expected = new if expected is None else jax.tree.map(
          lambda n, e, d=decay: (1 - d) * n + d * e, new, expected)
    assert max_abs_diff(state.ema[part], expected) < 1e-6
    assert max_abs_diff(getattr(history[-1], part), getattr(history[-2], part)) > 1e-3


def test_checkpoints_at_chosen_steps_are_kept_forever(tmp_path):
  manager = checkpoints.make_manager(str(tmp_path), keep=1, keep_forever_steps=[2, 4])

  def state(step):
    return steps.TrainState(
        step=jnp.array(step, jnp.int32), params={"w": jnp.full(3, float(step))}, batch_stats={},
        opt_state={}, ema={})

  for step in range(1, 7):
    checkpoints.save(manager, state(step))
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 4, 6]
  restored = checkpoints.restore_latest(manager, state(0))
  assert int(restored.step) == 6 and float(restored.params["w"][0]) == 6.0
  manager.close()


def test_rmsprop_is_tf1s_with_heavy_ball_momentum():
  """Three updates against the original's TF1 RMSProp in float64: v starts at 1."""
  config = make_config(optimizer="rmsprop", momentum=0.9, nesterov=True,
                       use_learning_rate_schedule=False, learning_rate=0.1)
  tx = optim.create_optimizer(config, STEPS_PER_EPOCH, ())
  w = {"w": jnp.array([0.5, -1.0, 2.0])}
  state = tx.init(w)
  grads = [np.array([0.3, -0.2, 1.5]), np.array([-0.1, 0.4, 0.0]), np.array([2.0, 0.1, -0.7])]
  v, m, expected = np.ones(3), np.zeros(3), np.array([0.5, -1.0, 2.0])
  for g in grads:
    updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, w)
    w = jax.tree.map(lambda p, u: p + u, w, updates)
    v = 0.9 * v + 0.1 * g ** 2
    m = 0.9 * m + g / np.sqrt(v + 1e-3)  # heavy ball: the original ignored Nesterov here
    expected = expected - 0.1 * m
  np.testing.assert_allclose(w["w"], expected, rtol=1e-6)


def test_num_train_steps_sets_the_run_and_schedule_length():
  config = make_config(num_train_steps=20)
  assert optim.total_steps(config, STEPS_PER_EPOCH) == 20
  schedule = optim.learning_rate_schedule(config, STEPS_PER_EPOCH)
  np.testing.assert_allclose([float(schedule(t)) for t in (0, 10, 20)], [0.4, 0.2, 0.0], atol=1e-6)


# --- SAM in front of AdamW and Lion, against a float64 transcription of their papers ---


def adamw_direction(state, g, t, b1=0.9, b2=0.999, eps=1e-8):
  """Adam's m_hat / (sqrt(v_hat) + eps) (Kingma & Ba 2015, Algorithm 1)."""
  state["m"] = b1 * state.get("m", 0) + (1 - b1) * g
  state["v"] = b2 * state.get("v", 0) + (1 - b2) * g ** 2
  return (state["m"] / (1 - b1 ** (t + 1))) / (np.sqrt(state["v"] / (1 - b2 ** (t + 1))) + eps)


def lion_direction(state, g, t, b1=0.9, b2=0.99):
  """sign(b1 m + (1 - b1) g), then m <- b2 m + (1 - b2) g (Chen et al. 2023, Algorithm 2)."""
  direction = np.sign(b1 * state.get("m", 0) + (1 - b1) * g)
  state["m"] = b2 * state.get("m", 0) + (1 - b2) * g
  return direction


@pytest.mark.parametrize("optimizer, direction", [("adamw", adamw_direction),
                                                  ("lion", lion_direction)])
def test_sam_in_front_of_an_adaptive_optimizer_matches_float64(optimizer, direction):
  """Six steps of SAM -> clipping -> AdamW / Lion -> decoupled weight decay (masked: not on
  the bias) -> warmup then linear decay, on a quadratic whose gradient is exact."""
  rng = np.random.default_rng(0)
  q = rng.standard_normal((8, 8))
  a, b = q @ q.T / 8 + np.eye(8), 3 * rng.standard_normal(8)  # gradients above the clip
  grad = lambda w: a @ w + b
  lr, rho, wd, clip, warmup, total, end = 0.05, 0.1, 0.1, 2.0, 2, 5 * STEPS_PER_EPOCH, 0.1
  config = make_config(optimizer=optimizer, learning_rate=lr, lr_schedule="linear", linear_end=end,
                       warmup_epochs=warmup / STEPS_PER_EPOCH, weight_decay=wd,
                       no_weight_decay_on_bn=True, gradient_clipping=clip, sam=dict(rho=rho))
  w0 = rng.standard_normal(8)

  # The learning rates: the closed form, as optax evaluates it (in float32, even in x64).
  closed_form = [
      lr * t / warmup if t < warmup else lr + (lr * end - lr) * (t - warmup) / (total - warmup)
      for t in range(6)
  ]
  schedule = optim.learning_rate_schedule(config, STEPS_PER_EPOCH)
  rates = [float(schedule(t)) for t in range(6)]
  np.testing.assert_allclose(rates, closed_form, rtol=1e-7)

  # The transcription: [kernel (3 x 2), bias (2,)] as one vector; the mask spares the bias.
  w, state, mask = w0.copy(), {}, np.r_[np.ones(6), np.zeros(2)]
  for t in range(6):
    g = grad(w)
    g = grad(w + rho * g / np.linalg.norm(g))  # SAM's gradient at w + eps
    g *= min(1.0, clip / np.linalg.norm(g))
    w = w - rates[t] * (direction(state, g, t) + wd * mask * w)

  with jax.enable_x64(True):
    tx = optim.create_optimizer(config, STEPS_PER_EPOCH, ())
    as_tree = lambda v: {"kernel": jnp.asarray(v[:6].reshape(3, 2)), "bias": jnp.asarray(v[6:])}
    as_vector = lambda p: np.r_[np.ravel(p["kernel"]), p["bias"]]
    tree_grad = lambda p: as_tree(grad(as_vector(p)))
    metrics = {"loss": jnp.zeros(()), "error": jnp.zeros(())}  # what the step reports at w + eps
    params = as_tree(w0)
    opt_state = tx.init(params)
    for _ in range(6):
      updates, opt_state = tx.update(
          tree_grad(params), opt_state, params, grad_fn=lambda p: (tree_grad(p), metrics))
      params = jax.tree.map(lambda p, u: p + u, params, updates)
    assert params["kernel"].dtype == jnp.float64
    np.testing.assert_allclose(as_vector(params), w, rtol=1e-12, atol=1e-12)
  assert np.abs(w - w0).max() > 0.05  # the steps moved it


def test_unset_weight_decay_type_is_the_optimizers_own():
  assert optim.weight_decay_type(make_config()) == "l2"  # sgd: in the loss, as the original
  assert optim.weight_decay_type(make_config(optimizer="rmsprop")) == "l2"
  assert optim.weight_decay_type(make_config(optimizer="adamw")) == "decoupled"
  assert optim.weight_decay_type(make_config(optimizer="lion")) == "decoupled"
  assert optim.weight_decay_type(make_config(optimizer="adamw", weight_decay_type="l2")) == "l2"


def test_linear_schedule_ends_at_its_fraction():
  values = schedule_values(lr_schedule="linear", linear_end=0.25)
  np.testing.assert_allclose(values, 0.4 + (0.1 - 0.4) * np.arange(51) / 50, atol=1e-6)
  assert optim.final_learning_rate(make_config(lr_schedule="linear", linear_end=0.25)) == 0.1


def test_the_start_line_names_sam_and_the_base_optimizer():
  layout = replicas.make_layout(64, 16, 1)
  line = run_setup.description(make_config(optimizer="adamw", sam=dict(rho=0.05)), layout)
  assert "with sam (rho 0.05) over adamw in float32: 4 replicas of m=16" in line
  assert "with no SAM (rho 0) over sgd" in run_setup.description(make_config(), layout)


def test_linear_warmup_in_steps_then_linear_decay_is_big_visions():
  # big_vision utils.py:1113-1137: progress = (t - w) / (T - w) clipped to [0, 1];
  # lr = end + (lr - end)(1 - progress), times min(1, t / w).
  values = schedule_values(lr_schedule="linear", linear_end=0.01, warmup_steps=7,
                           warmup_epochs=3.0)  # warmup_steps wins
  t = np.arange(51, dtype=np.float64)
  progress = np.clip((t - 7) / (50 - 7), 0, 1)
  expected = (0.004 + (0.4 - 0.004) * (1 - progress)) * np.minimum(1, t / 7)
  np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)


def test_kernels_only_decay_skips_embeddings_biases_and_norms():
  params = {
      "embedding": {
          "kernel": jnp.ones((2, 2, 3, 4)),
          "bias": jnp.ones(4)
      },
      "Transformer": {
          "posembed_input": {
              "pos_embedding": jnp.ones((1, 5, 4))
          },
          "encoder_norm": {
              "scale": jnp.ones(4)
          }
      },
      "cls": jnp.ones((1, 1, 4)),
      "head": {
          "kernel": jnp.ones((4, 3))
      }
  }
  mask = optim.weight_decay_mask(params, no_weight_decay_on_bn=False, kernels_only=True)
  decayed = {
      jax.tree_util.keystr(path) for path, m in jax.tree_util.tree_leaves_with_path(mask) if m
  }
  assert decayed == {"['embedding']['kernel']", "['head']['kernel']"}
  # ndim > 1 (no_weight_decay_on_bn) would have decayed the position embedding and class token.
  by_ndim = optim.weight_decay_mask(params, no_weight_decay_on_bn=True)
  assert by_ndim["cls"] and by_ndim["Transformer"]["posembed_input"]["pos_embedding"]
