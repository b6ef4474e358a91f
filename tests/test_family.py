"""The SAM family (sam_jax/family.py) against float64 implementations of each paper's equations.

The model is test_sam's tanh MLP with hand-written float64 backprop; every variant runs
several steps with state (SGD with heavy-ball momentum behind it), each step on its own
batch, and is compared with numpy; then the reductions that must hold (alpha = 0 is SAM,
k = 1 is SAM, ...) and, in a real train step with virtual replicas, that the cheap steps
do not run the second pass.
"""

import itertools

import flax.linen as nn

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sam_jax
from conftest import max_abs_diff, tiny_config
from sam_jax import family, optim, replicas, steps
from sam_jax.family import registry
from test_sam import mlp_data, mlp_grads64

RHO, LR, MU, STEPS = 0.3, 0.1, 0.9, 4


def batches64(seed=7, size=12):
  rng = np.random.default_rng(seed)
  return [(rng.standard_normal((size, 5)), rng.integers(0, 3, size)) for _ in range(STEPS)]


def example_losses64(p, x, y):
  z = np.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
  z = z - z.max(1, keepdims=True)
  return np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]


def dot(a, b):
  return sum(np.sum(a[k] * b[k]) for k in a)


def norm(a):
  return np.sqrt(dot(a, a))


def lin(*terms):
  """sum of coefficient * tree."""
  return {k: sum(c * t[k] for c, t in zip(terms[::2], terms[1::2])) for k in terms[1]}


def oracle_run(direction, w, data):
  """Float64 SGD with momentum on `direction(t, w, x, y, memory) -> gradient`."""
  v = {k: np.zeros_like(a) for k, a in w.items()}
  memory = {}
  for t, (x, y) in enumerate(data):
    d = direction(t, w, x, y, memory)
    v = lin(MU, v, 1.0, d)
    w = lin(1.0, w, -LR, v)
  return w


def sam_gradient64(w, x, y, rho=RHO):
  g = mlp_grads64(w, x, y)
  return g, mlp_grads64(lin(1.0, w, rho / norm(g), g), x, y)


def mlp_loss_fns(x, y, at=None):
  """The MLP's per-example losses(p) and grad_fn(p, examples=None, functional=False) on the
  batch (x, y); functional: the Jacobian of the logits at p times dL/dlogits at `at`."""
  def logits(p):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

  def losses(p, x=x, y=y):
    z = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(z, y)

  def grad_fn(p, examples=None, functional=False):
    if functional:
      loss = lambda z: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y))
      return jax.vjp(logits, p)[1](jax.grad(loss)(logits(at)))[0]
    chosen = (x, y) if examples is None else (x[examples], y[examples])
    return jax.grad(lambda q: jnp.mean(losses(q, *chosen)))(p)

  return losses, grad_fn


def jax_run(tx, w, data, base=None, **extra_fns):
  """chain(tx, sgd momentum) (or tx alone when base is False), STEPS jitted steps."""
  tx = optax.chain(tx, optax.sgd(LR, momentum=MU)) if base is None else tx
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w)
  state = tx.init(params)

  @jax.jit
  def step(params, state, x, y):
    losses, grad_fn = mlp_loss_fns(x, y, at=params)
    grads = grad_fn(params)
    updates, state = tx.update(grads, state, params, grad_fn=grad_fn, example_losses=losses(params),
                               example_losses_fn=losses)
    return optax.apply_updates(params, updates), state

  for x, y in data:
    params, state = step(params, state, jnp.asarray(x, jnp.float32), jnp.asarray(y))
  return params, state


@pytest.fixture(scope="module")
def setup():
  return mlp_data(seed=8)[0], batches64()


def test_gsam_with_rho_following_the_learning_rate_matches_float64(setup):
  w0, data = setup
  alpha, rho_max, rho_min = 0.4, 0.5, 0.1
  lr = optax.linear_schedule(1.0, 0.2, STEPS)  # lr_max 1.0, lr_min 0.2

  def gsam64(t, w, x, y, _):
    rho = rho_min + (rho_max - rho_min) * (float(lr(t)) - 0.2) / (1.0 - 0.2)
    g, gp = sam_gradient64(w, x, y, rho)
    g_perp = lin(1.0, g, -dot(g, gp) / dot(gp, gp), gp)  # g minus its part along g_p
    return lin(1.0, gp, -alpha, g_perp)

  tx = family.gsam(family.rho_following(lr, rho_max, rho_min, 1.0, 0.2), alpha=alpha)
  got, _ = jax_run(tx, w0, data)
  expected = oracle_run(gsam64, w0, data)
  assert max_abs_diff(got, expected) < 2e-5
  sam_like = oracle_run(lambda t, w, x, y, _: sam_gradient64(w, x, y, 0.5)[1], w0, data)
  assert max_abs_diff(got, sam_like) > 1e-3  # alpha and the schedule matter


def test_looksam_reuses_the_orthogonal_part_between_sam_steps(setup):
  w0, data = setup
  alpha, k = 0.7, 3

  def looksam64(t, w, x, y, memory):
    if t % k == 0:
      g, gs = sam_gradient64(w, x, y)
      memory["gv"] = lin(1.0, gs, -dot(g, gs) / dot(g, g), g)
      return gs
    g = mlp_grads64(w, x, y)
    return lin(1.0, g, alpha * norm(g) / norm(memory["gv"]), memory["gv"])

  got, state = jax_run(family.looksam(RHO, every=k, alpha=alpha), w0, data)
  assert max_abs_diff(got, oracle_run(looksam64, w0, data)) < 2e-5
  assert int(state[0].sam.count) == STEPS


def test_looksam_over_replicas_keeps_the_mean_gradients_orthogonal_part(setup):
  """Two replicas (halves of each batch), each perturbing with its own g; g_v and ||g||
  from the replica means, so that the mean update is the one-replica rule on them."""
  w0, data = setup
  alpha, k = 0.7, 2

  def looksam64(t, w, x, y, memory):
    halves = [(x[:6], y[:6]), (x[6:], y[6:])]
    g = [mlp_grads64(w, *half) for half in halves]
    mean_g = lin(0.5, g[0], 0.5, g[1])
    if t % k == 0:
      gs = [sam_gradient64(w, *half)[1] for half in halves]
      mean_gs = lin(0.5, gs[0], 0.5, gs[1])
      memory["gv"] = lin(1.0, mean_gs, -dot(mean_g, mean_gs) / dot(mean_g, mean_g), mean_g)
      return mean_gs
    return lin(1.0, mean_g, alpha * norm(mean_g) / norm(memory["gv"]), memory["gv"])

  tx = optax.chain(
      family.looksam(RHO, every=k, alpha=alpha, axis_name="r"), sam_jax.cross_replica_mean("r"),
      optax.sgd(LR, momentum=MU))
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w0)
  state = tx.init(params)

  def replica_step(params, state, x, y):
    def grad_fn(p):
      return jax.grad(lambda q: jnp.mean(
          optax.softmax_cross_entropy_with_integer_labels(
              jnp.tanh(x @ q["w1"] + q["b1"]) @ q["w2"] + q["b2"], y)))(
                  p)

    updates, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  step = jax.jit(jax.vmap(replica_step, in_axes=(None, None, 0, 0), out_axes=None, axis_name="r"))
  for x, y in data:
    params, state = step(params, state,
                         jnp.asarray(x, jnp.float32).reshape(2, 6, 5),
                         jnp.asarray(y).reshape(2, 6))
  assert max_abs_diff(params, oracle_run(looksam64, w0, data)) < 2e-5


def test_sam_every_k_steps_is_composers_schedule(setup):
  w0, data = setup

  def every2(t, w, x, y, _):
    return sam_gradient64(w, x, y)[1] if (t + 1) % 2 == 0 else mlp_grads64(w, x, y)

  got, _ = jax_run(family.sometimes(sam_jax.sam(RHO), every=2), w0, data)
  assert max_abs_diff(got, oracle_run(every2, w0, data)) < 2e-5


def test_late_phase_sam_is_plain_steps_then_sam(setup):
  """Late-phase SAM (zzp1012/SAM-in-Late-Phase script/ERM_to_SAM.py:104): SAM from step 2."""
  w0, data = setup

  def late(t, w, x, y, _):
    return sam_gradient64(w, x, y)[1] if t >= 2 else mlp_grads64(w, x, y)

  got, _ = jax_run(family.sometimes(sam_jax.sam(RHO), start=2), w0, data)
  assert max_abs_diff(got, oracle_run(late, w0, data)) < 2e-5
  config = tiny_config(sam=dict(late_phase=0.25))
  assert [registry.second_pass_schedule(config.sam, 0, 8)(t) for t in range(8)
         ] == [False] * 6 + [True] * 2


def test_fsam_matches_the_authors_code_in_float64(setup):
  """nblt/F-SAM utils.py:444-461: d = g - sigma m_{t-1}, then m_t = lmbda m + (1 - lmbda) g;
  d and m start at the first gradient."""
  w0, data = setup
  sigma, lmbda = 0.8, 0.6

  def fsam64(t, w, x, y, memory):
    g = mlp_grads64(w, x, y)
    d = g if t == 0 else lin(1.0, g, -sigma, memory["m"])
    memory["m"] = g if t == 0 else lin(lmbda, memory["m"], 1.0 - lmbda, g)
    return mlp_grads64(lin(1.0, w, RHO / norm(d), d), x, y)

  got, _ = jax_run(family.friendly_sam(RHO, sigma=sigma, lmbda=lmbda), w0, data)
  assert max_abs_diff(got, oracle_run(fsam64, w0, data)) < 2e-5
  sam, _ = jax_run(sam_jax.sam(RHO), w0, data)
  assert max_abs_diff(got, sam) > 1e-3


def test_vasso_matches_the_authors_code_in_float64(setup):
  """BingcongLi/VaSSO solver/vasso.py:41-53: d_t = (1 - theta) d_{t-1} + theta g_t, d_0 = g_0."""
  w0, data = setup
  theta = 0.4

  def vasso64(t, w, x, y, memory):
    g = mlp_grads64(w, x, y)
    memory["d"] = g if t == 0 else lin(1.0 - theta, memory["d"], theta, g)
    return mlp_grads64(lin(1.0, w, RHO / norm(memory["d"]), memory["d"]), x, y)

  got, _ = jax_run(family.vasso(RHO, theta=theta), w0, data)
  assert max_abs_diff(got, oracle_run(vasso64, w0, data)) < 2e-5
  sam, _ = jax_run(sam_jax.sam(RHO), w0, data)
  assert max_abs_diff(got, sam) > 1e-3


def test_averaged_directions_keep_the_replicas_mean_gradient(setup):
  """Over 2 replicas each perturbs with its own g, and the state (F-SAM's m, VaSSO's d) is
  of the mean gradient, the same on both: the replicas' states are equal."""
  w, [(x, y), (x2, y2), *_] = setup
  for tx in (family.friendly_sam(RHO, axis_name="r"), family.vasso(RHO, theta=0.5, axis_name="r")):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w)

    def replica(x, y, x2, y2, tx=tx, params=params):
      state = tx.init(params)
      for xs, ys in ((x, y), (x2, y2)):
        _, grad_fn = mlp_loss_fns(xs, ys)
        _, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
      return state.average

    halves = [
        a.reshape(2, -1, *a.shape[1:]) for a in (jnp.asarray(x, jnp.float32), jnp.asarray(y),
                                                 jnp.asarray(x2, jnp.float32), jnp.asarray(y2))
    ]
    averages = jax.jit(jax.vmap(replica, axis_name="r"))(*halves)
    for leaf in jax.tree.leaves(averages):
      np.testing.assert_array_equal(leaf[0], leaf[1])
      assert np.abs(np.asarray(leaf[0])).max() > 0


def test_sam_with_probability_p_is_sam_or_sgd_step_by_step(setup):
  """Each step must be either the SAM or the plain step, and both kinds must occur."""
  w0, data = setup
  tx = family.sometimes(sam_jax.sam(RHO), probability=0.5, seed=3)
  kinds = []
  w, state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w0), None
  params64 = w0
  for t in range(8):
    x, y = data[t % STEPS]
    got, state = jax_run_one(tx, w, state, x, y)
    g, gs = sam_gradient64(params64, x, y)
    distances = [max_abs_diff(got, lin(1.0, params64, -LR, d)) for d in (g, gs)]
    assert min(distances) < 1e-5 and max(distances) > 1e-4
    kinds.append(int(np.argmin(distances)))
    w, params64 = got, lin(1.0, params64, -LR, (g, gs)[kinds[-1]])
  assert 0 < sum(kinds) < 8, kinds


def jax_run_one(tx, params, state, x, y):
  """One step of tx then plain SGD (no momentum), from `state` (None: init)."""
  tx = optax.chain(tx, optax.sgd(LR))
  state = tx.init(params) if state is None else state
  grad_fn = jax.grad(lambda p: jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(
          jnp.tanh(jnp.asarray(x, jnp.float32) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"],
          jnp.asarray(y))))
  updates, state = jax.jit(lambda p, s: tx.update(grad_fn(p), s, p, grad_fn=grad_fn))(params, state)
  return optax.apply_updates(params, updates), state


def test_esam_data_selection_matches_float64(setup):
  w0, data = setup
  gamma = 0.5

  def esam64(t, w, x, y, _):
    g = mlp_grads64(w, x, y)
    w_adv = lin(1.0, w, RHO / norm(g), g)
    increase = example_losses64(w_adv, x, y) - example_losses64(w, x, y)
    chosen = np.argsort(-increase)[:round(gamma * len(y))]
    return mlp_grads64(w_adv, x[chosen], y[chosen])

  got, _ = jax_run(family.esam(RHO, beta=1.0, gamma=gamma), w0, data)
  assert max_abs_diff(got, oracle_run(esam64, w0, data)) < 2e-5


def test_esam_perturbs_whole_tensors_with_probability_beta():
  """Each step's update is the SAM step for one subset of the tensors, eps scaled to rho/beta;
  over the steps, tensors are both kept and dropped."""
  w0 = mlp_data(seed=9)[0]
  x, y = batches64(seed=10)[0]
  beta, names = 0.5, sorted(w0)
  g = mlp_grads64(w0, x, y)
  candidates = {}
  for kept in itertools.product([0.0, 1.0], repeat=len(names)):
    masked = {k: m * g[k] for k, m in zip(names, kept)}
    if norm(masked) > 0:
      w_adv = lin(1.0, w0, RHO / beta / norm(masked), masked)
      candidates[kept] = lin(1.0, w0, -LR, mlp_grads64(w_adv, x, y))
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w0)
  tx, state, seen = family.esam(RHO, beta=beta, gamma=1.0, seed=1), None, set()
  for _ in range(6):  # the same point and batch, a new mask draw at every count
    got, state = jax_run_one(tx, params, state, x, y)
    kept, distance = min(((k, max_abs_diff(got, c)) for k, c in candidates.items()),
                         key=lambda item: item[1])
    assert distance < 1e-5
    seen.add(kept)
  assert len(seen) > 1 and any(0.0 in kept for kept in seen)


def test_gcsam_centralizes_the_ascent_gradient_only(setup):
  w0, data = setup

  def gcsam64(t, w, x, y, _):
    g = mlp_grads64(w, x, y)
    centred = {k: a - a.mean(0, keepdims=True) if a.ndim > 1 else a for k, a in g.items()}
    return mlp_grads64(lin(1.0, w, RHO / norm(g), centred), x, y)  # norm before GC

  got, _ = jax_run(family.gcsam(RHO), w0, data)
  assert max_abs_diff(got, oracle_run(gcsam64, w0, data)) < 2e-5
  kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 8))
  centred = family.centralize_gradient({"k": kernel, "b": np.ones(8)})
  np.testing.assert_allclose(np.asarray(centred["k"]).mean((0, 1, 2)), 0.0, atol=1e-6)
  np.testing.assert_array_equal(centred["b"], np.ones(8))


@pytest.mark.parametrize("decoupled", [False, True])
def test_wsam_matches_float64(setup, decoupled):
  w0, data = setup
  gamma = 0.8
  a = gamma / (1 - gamma)
  v = {k: np.zeros_like(x) for k, x in w0.items()}
  w = w0
  for x, y in data:
    g, gs = sam_gradient64(w, x, y)
    if decoupled:  # momentum on g; the sharpness term a plain lr step
      v = lin(MU, v, 1.0, g)
      w = lin(1.0, w, -LR, v, -LR * a, lin(1.0, gs, -1.0, g))
    else:
      v = lin(MU, v, 1.0, lin(1.0 - a, g, a, gs))
      w = lin(1.0, w, -LR, v)
  if decoupled:
    tx = family.decoupled_wsam(RHO, optax.sgd(LR, momentum=MU), LR, gamma=gamma)
    got, _ = jax_run(tx, w0, data, base=False)
  else:
    got, _ = jax_run(family.wsam(RHO, gamma=gamma), w0, data)
  assert max_abs_diff(got, w) < 2e-5


def test_momentum_sam_follows_the_authors_algorithm(setup):
  """MarlonBecker/MSAM msam.py: gradient at w~, move back, momentum step, perturb again."""
  w_tilde, data = setup
  rho = 0.5
  v = {k: np.zeros_like(x) for k, x in w_tilde.items()}
  inverse_norm = 0.0
  for x, y in data:
    g = mlp_grads64(w_tilde, x, y)
    w = lin(1.0, w_tilde, rho * inverse_norm, v)  # move back
    v = lin(MU, v, 1.0, g)
    w = lin(1.0, w, -LR, v)
    inverse_norm = 1.0 / norm(v)
    w_tilde = lin(1.0, w, -rho * inverse_norm, v)
  tx = optax.chain(optax.sgd(LR, momentum=MU), family.momentum_perturbation(rho))
  got, state = jax_run(tx, setup[0], data, base=False)
  assert max_abs_diff(got, w_tilde) < 2e-5
  assert max_abs_diff(family.unperturbed(got, state), w) < 2e-5


def standard_normal(key, like):
  """The n of `posterior_sample` under `key`: its sample of w = 0, s = 1, N = 1."""
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), like)
  ones = jax.tree.map(lambda a: jnp.ones(a.shape, jnp.float32), like)
  return jax.tree.map(np.float64, family.posterior_sample(zeros, ones, 1.0, key))


def test_bsam_matches_the_authors_code_in_float64(setup):
  """team-approx-bayes/bayesian-sam optim.py:125-167: g at theta = w + n / sqrt(N s), the
  ascent to w + rho g / s, momentum of g_eps + delta w, w -= lr m / s with the old s, then
  s = beta2 s + (1 - beta2) (|g| sqrt(s) + damping + delta)."""
  w, data = setup
  rho, beta1, beta2, prior, num_data, s0, damping, seed = 0.05, 0.8, 0.9, 4.0, 50.0, 2.0, 0.1, 3
  delta = prior / num_data
  m = {k: np.zeros_like(a) for k, a in w.items()}
  s = {k: np.full_like(a, s0) for k, a in w.items()}
  for t, (x, y) in enumerate(data):
    n = standard_normal(jax.random.fold_in(jax.random.key(seed), t), w)
    g = mlp_grads64({k: w[k] + n[k] / np.sqrt(num_data * s[k]) for k in w}, x, y)
    g_eps = mlp_grads64({k: w[k] + rho * g[k] / s[k] for k in w}, x, y)
    m = {k: beta1 * m[k] + (1 - beta1) * (g_eps[k] + delta * w[k]) for k in w}
    w = {k: w[k] - LR * m[k] / s[k] for k in w}
    s = {k: beta2 * s[k] + (1 - beta2) * (np.abs(g[k]) * s[k] ** 0.5 + damping + delta) for k in w}
  tx = family.bayesian_sam(LR, rho=rho, beta1=beta1, beta2=beta2, prior_precision=prior,
                           num_data=num_data, init_precision=s0, damping=damping, seed=seed)
  got, state = jax_run(tx, setup[0], data, base=False)
  assert max_abs_diff(got, w) < 2e-5
  assert max_abs_diff(family.bayesian.precision(state), s) < 2e-5
  assert max_abs_diff(s, {k: np.full_like(a, s0) for k, a in s.items()}) > 0.1  # s has moved


def test_bsam_replicas_draw_their_own_noise_and_share_the_posterior(setup):
  """Over 2 replicas (the authors' batchsplit), each samples its own theta and the state
  (w's update, m, s) follows their mean, the same on both."""
  w, [(x, y), *_] = setup
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w)
  tx = family.bayesian_sam(LR, num_data=20.0, axis_name="r")
  samples = []

  def replica(x, y):
    _, grad_fn = mlp_loss_fns(x, y)

    def recording(p):
      samples.append(p)  # the first call is at the replica's posterior sample
      return grad_fn(p)

    return tx.update(None, tx.init(params), params, grad_fn=recording)

  halves = [a.reshape(2, -1, *a.shape[1:]) for a in (jnp.asarray(x, jnp.float32), jnp.asarray(y))]
  (updates,
   state), thetas = jax.jit(jax.vmap(lambda x, y: (replica(x, y), samples[0]),
                                     axis_name="r"))(*halves)
  for leaf in jax.tree.leaves((updates, state.precision)):
    np.testing.assert_array_equal(leaf[0], leaf[1])
  assert max_abs_diff(*(jax.tree.map(lambda a, i=i: a[i], thetas) for i in (0, 1))) > 1e-3


def test_sampa_matches_the_authors_code_in_float64(setup):
  """LIONS-EPFL/SAMPa train.py:46-102 with torch's SGD (momentum, weight decay): rank 0's
  gradient at x~ = x + rho g_y/||g_y|| on the previous batch, rank 1's at the predicted
  y = x - lr (g_y + wd x + mu buf) on the current one, the update from (1 - og) and og of
  them. Here the ranks are 2 replicas, the even one given the previous batch."""
  w, data = setup
  lmbda, wd = 0.3, 0.01
  x, buf, g_y, previous = dict(w), None, {k: np.zeros_like(a) for k, a in w.items()}, data[0]
  for batch in data:
    ascent = mlp_grads64(lin(1.0, x, RHO / (norm(g_y) + 1e-12), g_y), *previous)
    y = lin(1.0, x, -LR, g_y) if buf is None else lin(1.0, x, -LR, lin(1.0, g_y, wd, x, MU, buf))
    g_y = mlp_grads64(y, *batch)
    d = lin(1.0 - lmbda, ascent, lmbda, g_y, wd, x)
    buf = d if buf is None else lin(MU, buf, 1.0, d)
    x, previous = lin(1.0, x, -LR, buf), batch
  base = optax.chain(optax.add_decayed_weights(wd), optax.sgd(LR, momentum=MU))
  tx = family.sampa(RHO, base, lmbda=lmbda, axis_name="r")
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w)
  state = tx.init(params)

  def replica(params, state, x, y):
    _, grad_fn = mlp_loss_fns(x, y)
    updates, state = tx.update(None, state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  step = jax.jit(jax.vmap(replica, in_axes=(None, None, 0, 0), out_axes=None, axis_name="r"))
  for before, now in zip([data[0], *data], data):  # the first step sees its batch twice
    pair = [np.stack([a, b]) for a, b in zip(before, now)]
    params, state = step(params, state, jnp.asarray(pair[0], jnp.float32), jnp.asarray(pair[1]))
  assert max_abs_diff(params, x) < 2e-5
  sgd, _ = jax_run(base, w, data, base=False)  # not the base optimizer alone
  assert max_abs_diff(params, sgd) > 1e-3


def test_functional_sam_matches_float64(setup):
  """Functional-SAM (Singh et al. 2025, arXiv 2502.02407): SAM's eps = rho g/||g||, then
  the gradient with the network's Jacobian at w + eps and dL/dlogits at w, by hand."""
  w0, data = setup

  def functional64(t, w, x, y, _):
    g = mlp_grads64(w, x, y)
    p = lin(1.0, w, RHO / norm(g), g)
    z = np.tanh(x @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"]
    prob = np.exp(z - z.max(1, keepdims=True))
    dz = (prob / prob.sum(1, keepdims=True) - np.eye(3)[y]) / len(y)  # at w
    h = np.tanh(x @ p["w1"] + p["b1"])  # the Jacobian at w + eps
    dh = dz @ p["w2"].T * (1 - h ** 2)
    return {"w1": x.T @ dh, "b1": dh.sum(0), "w2": h.T @ dz, "b2": dz.sum(0)}

  got, _ = jax_run(family.functional_sam(sam_jax.sam(RHO)), w0, data)
  assert max_abs_diff(got, oracle_run(functional64, w0, data)) < 2e-5
  sam, _ = jax_run(sam_jax.sam(RHO), w0, data)
  assert max_abs_diff(got, sam) > 1e-3


def test_posterior_samples_have_the_variance_one_over_n_s():
  """theta ~ N(w, 1 / (N s)): 4,000 draws of a 3-vector, mean and variance within 5 standard
  errors."""
  w, s, num_data = jnp.array([1.0, -2.0, 0.5]), jnp.array([1.0, 4.0, 0.25]), 10.0
  keys = jax.random.split(jax.random.key(0), 4000)
  draws = np.asarray(jax.vmap(lambda k: family.posterior_sample(w, s, num_data, k))(keys))
  variance = 1.0 / (num_data * np.asarray(s))
  np.testing.assert_allclose(draws.mean(0), w, atol=5 * np.sqrt(variance / 4000).max())
  np.testing.assert_allclose(draws.var(0), variance, rtol=5 * np.sqrt(2 / 4000))


@pytest.mark.parametrize("variant",
                         ["gsam", "looksam", "every", "esam", "wsam", "fsam", "vasso", "late"])
def test_reductions_to_sam(setup, variant):
  """GSAM alpha = 0, LookSAM k = 1, every k = 1, ESAM beta = gamma = 1, WSAM gamma = 0.5,
  F-SAM sigma = 0, VaSSO theta = 1, late-phase SAM from step 0."""
  w0, data = setup
  tx = {
      "gsam": family.gsam(RHO, alpha=0.0),
      "looksam": family.looksam(RHO, every=1),
      "every": family.sometimes(sam_jax.sam(RHO), every=1),
      "esam": family.esam(RHO, beta=1.0, gamma=1.0),
      "wsam": family.wsam(RHO, gamma=0.5),
      "fsam": family.friendly_sam(RHO, sigma=0.0),
      "vasso": family.vasso(RHO, theta=1.0, eps=1e-12),
      "late": family.sometimes(sam_jax.sam(RHO), start=0),
  }
  got, _ = jax_run(tx[variant], w0, data)
  expected, _ = jax_run(sam_jax.sam(RHO), w0, data)
  assert max_abs_diff(got, expected) < 1e-6


def test_sam_on_perturbs_only_the_masked_parameters_matches_float64(setup):
  """SAM-ON (mueller-mp/SAM-ON): eps = rho g_M / ||g_M|| on the masked leaves, 0 elsewhere."""
  w0, data = setup
  mask = {"w1": False, "b1": True, "w2": False, "b2": True}

  def sam_on64(t, w, x, y, _):
    g = mlp_grads64(w, x, y)
    g_m = {k: g[k] if mask[k] else np.zeros_like(g[k]) for k in g}
    return mlp_grads64(lin(1.0, w, RHO / norm(g_m), g_m), x, y)

  got, _ = jax_run(sam_jax.sam(RHO, perturbation_mask=mask), w0, data)
  assert max_abs_diff(got, oracle_run(sam_on64, w0, data)) < 2e-5
  sam, _ = jax_run(sam_jax.sam(RHO), w0, data)
  assert max_abs_diff(got, sam) > 1e-3
  everything, _ = jax_run(
      sam_jax.sam(RHO, perturbation_mask=lambda p: jax.tree.map(lambda _: True, p)), w0, data)
  assert max_abs_diff(everything, sam) == 0  # a mask of all ones is SAM


@pytest.mark.parametrize("name, shape", [("WideResnet_mini", (1, 32, 32, 3)),
                                         ("Pyramid_ShakeDrop_mini", (1, 32, 32, 3)),
                                         ("efficientnet-mini", (1, 32, 32, 3)),
                                         ("ViT-mini_2", (1, 8, 8, 3)),
                                         ("Mixer-mini_2", (1, 8, 8, 3))])
def test_normalization_layers_are_the_norms_scales_and_biases(name, shape):
  from sam_jax.models import get_model  # pylint: disable=import-outside-toplevel
  model = get_model(name, 10)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  norms = flax_norm_paths(model, shape)
  mask = sam_jax.normalization_layers(params["params"])
  leaves = jax.tree_util.tree_leaves_with_path(mask)
  chosen = {jax.tree_util.keystr(path) for path, m in leaves if m}
  assert chosen == norms and len(norms) >= 4


def flax_norm_paths(model, shape):
  """The params of BatchNorm and LayerNorm modules, found by Flax's own module types."""
  found = set()

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)  # then the module's parameters exist
    is_norm = isinstance(context.module, (nn.BatchNorm, nn.LayerNorm))
    if is_norm and context.method_name == "__call__":
      scope = context.module.scope
      path = "".join(f"['{k}']" for k in scope.path)
      found.update(f"{path}['{leaf}']" for leaf in scope.variables().get("params", {}))
    return out

  with nn.intercept_methods(record):  # traced only: the names, no computation
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return found


# --- in the real train step: which forward passes run, over 2 virtual replicas ---

SEEN = []  # the examples of each forward pass of CountingNet


class CountingNet(nn.Module):
  """A linear classifier that records the number of examples of every forward pass."""
  @nn.compact
  def __call__(self, x, train=False):
    jax.debug.callback(lambda first: SEEN.append(len(first)), x[:, 0, 0, 0])
    return nn.Dense(10)(x.reshape(len(x), -1))


@pytest.mark.parametrize("mapping, decided", [("loop", "cond"), ("scan", "cond"), ("loop", "host"),
                                              ("scan", "host")])
@pytest.mark.parametrize(
    "variant,options,sam_steps,passes",
    [
        ("looksam", dict(looksam_every=3), [0, 3], [4]),  # the SAM pass: 4 examples
        ("sam", dict(every=3), [2, 5], [4]),
        ("esam", dict(esam_beta=0.5, esam_gamma=0.5), range(6), [4, 2]),  # losses, 2 chosen
        ("msam", dict(rho=3.0), [], []),
    ])
def test_cheap_steps_run_one_forward_backward_per_replica(mapping, decided, variant, options,
                                                          sam_steps, passes):
  """Decided in the program (a lax.cond) or on the host (the registry's schedule, as the loop)."""
  model = CountingNet()
  config = tiny_config(learning_rate=0.1, num_epochs=1, sam=dict(variant=variant, **options))
  tx = optim.create_optimizer(config, 10, replicas.REPLICA_AXES)
  mesh = replicas.make_mesh(1)
  state = replicas.replicate(steps.init_train_state(model, tx, jax.random.key(0), (2, 2, 1)), mesh)
  step = steps.make_train_step(model, tx, mesh, replicas.make_layout(8, 4, 1),
                               replica_mapping=mapping)
  rng = np.random.default_rng(0)
  for t in range(6):
    SEEN.clear()
    batch = {
        "image": rng.standard_normal((8, 2, 2, 1), np.float32),
        "label": rng.integers(0, 10, 8).astype(np.int32)
    }
    sam_step = registry.second_pass_schedule(config.sam, config.seed,
                                             10)(t) if decided == "host" else None
    state, metrics = step(state, replicas.shard_batch(batch, mesh), jax.random.key(1), sam_step)
    jax.block_until_ready(metrics)
    jax.effects_barrier()
    per_replica = [4] + (passes if t in sam_steps else [])
    assert sorted(SEEN) == sorted(per_replica * 2), (t, SEEN)


def registry_update(variant, options, w, x, y):
  """The first two updates of `variant`'s registry chain (no base optimizer) at w, on two
  replicas (a vmap over axis "r"), each with its half of (x, y): SAMPa's first ascent is
  along a zero lookahead gradient, its second along the first's."""
  config = tiny_config(sam=dict(variant=variant, rho=RHO, wsam_decoupled=False, **options))
  tx = registry.build_chain(
      registry.Chain(config.sam, (), lambda count: LR, (LR, 0.0), ("r",), seed=0, aux_init=None,
                     total_steps=4))
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w)

  def replica(x, y):
    losses, grad_fn = mlp_loss_fns(x, y, at=params)
    updates, state = [], tx.init(params)
    for _ in range(2):
      update, state = tx.update(
          grad_fn(params), state, params, grad_fn=grad_fn, example_losses=losses(params),
          example_losses_fn=losses)
      updates.append(update)
    return updates

  halves = (jnp.asarray(x, jnp.float32).reshape(2, -1, x.shape[-1]), jnp.asarray(y).reshape(2, -1))
  return jax.vmap(replica, axis_name="r")(*halves)


@pytest.mark.parametrize("variant", sorted(registry.VARIANTS))
def test_every_shared_option_a_variant_takes_changes_its_update(variant, setup):
  """What `Variant.takes` claims is honoured: each such option, switched on, changes the
  first two updates (validation refuses the others)."""
  w, [(x, y), *_] = setup
  switched = {
      "adaptive": ({}, dict(adaptive=True)),
      "eta": (dict(adaptive=True), dict(adaptive=True, eta=1.0)),
      "p": ({}, dict(p=float("inf"))),
      "sync_perturbations": ({}, dict(sync_perturbations=True)),
      "every": ({}, dict(every=2)),  # update 0 is then a plain one
      "probability": ({}, dict(probability=0.01)),  # update 0 plain: its draw is above
      "perturbation_mask": ({}, dict(perturbation_mask="norm")),  # the MLP has none: eps = 0
      "late_phase": ({}, dict(late_phase=0.5)),  # of 4 updates, 0 and 1 plain
  }
  assert family.cheaper.uniform_hash(0, 0, np) > 0.01
  for option in registry.VARIANTS[variant].takes:
    off, on = switched[option]
    difference = max_abs_diff(
        registry_update(variant, off, w, x, y), registry_update(variant, on, w, x, y))
    assert difference > 1e-4, (variant, option)
