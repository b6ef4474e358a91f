"""SAM / ASAM transformations against float64 closed forms and optax.contrib.sam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sam_jax
from conftest import max_abs_diff

RHO, LR = 0.05, 0.1

# --- a quadratic L(w) = 0.5 w'Aw + b'w, whose gradient Aw + b is exact in float64 ---


def quadratic(seed=0, n=6):
  rng = np.random.default_rng(seed)
  root = rng.standard_normal((n, n))
  a = root @ root.T / n + np.eye(n)
  b = rng.standard_normal(n)
  w = rng.standard_normal(n)
  return a, b, w


def quadratic_grad_fn(a, b):
  a32, b32 = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  return lambda w: {"kernel": a32 @ w["kernel"] + b32}


def sam_sgd_step(tx_sam, params, grad_fn):
  """One step of chain(tx_sam, sgd(LR)) from `params`."""
  tx = optax.chain(tx_sam, optax.sgd(LR))
  updates, _ = tx.update(grad_fn(params), tx.init(params), params, grad_fn=grad_fn)
  return optax.apply_updates(params, updates)


def dual_oracle(g, p):
  """argmax_{||e||_p<=1} <e, g> in float64, by the textbook formulas."""
  if p == 2:
    return g / np.linalg.norm(g)
  if p == np.inf:
    return np.sign(g)
  if p == 1:
    e = np.zeros_like(g)
    i = np.argmax(np.abs(g))
    e[i] = np.sign(g[i])
    return e
  q = p / (p - 1)
  return np.sign(g) * np.abs(g) ** (q - 1) / np.sum(np.abs(g) ** q) ** (1 / p)


@pytest.mark.parametrize("p", [2, np.inf, 3.0, 1.5, 1])
def test_quadratic_update_matches_float64_closed_form(p):
  a, b, w = quadratic()
  g = a @ w + b
  w_adv = w + RHO * dual_oracle(g, p)
  expected = w - LR * (a @ w_adv + b)
  params = {"kernel": jnp.asarray(w, jnp.float32)}
  got = sam_sgd_step(sam_jax.sam(RHO, p=p), params, quadratic_grad_fn(a, b))
  np.testing.assert_allclose(got["kernel"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [2, np.inf, 3.0, 1.5, 1])
def test_dual_direction_is_on_the_unit_sphere_and_attains_the_dual_norm(p):
  g = np.random.default_rng(1).standard_normal(40)
  e = np.asarray(sam_jax.dual_direction({"g": jnp.asarray(g, jnp.float32)}, p)["g"], np.float64)
  q = np.inf if p == 1 else (1 if p == np.inf else p / (p - 1))
  np.testing.assert_allclose(np.linalg.norm(e, ord=p), 1.0, rtol=1e-5)
  np.testing.assert_allclose(e @ g, np.linalg.norm(g, ord=q), rtol=1e-5)  # Hoelder equality


def test_asam_matches_float64_closed_form_with_unscaled_biases():
  rng = np.random.default_rng(2)
  w = {"dense": {"kernel": rng.standard_normal((3, 4)), "bias": rng.standard_normal(4)}}
  target = rng.standard_normal((3, 4))

  # L = 0.5 ||kernel - target||^2 + 0.5 ||bias||^2 + sum(kernel * bias): couples the leaves.
  def grads64(p):
    k, c = p["dense"]["kernel"], p["dense"]["bias"]
    return {"dense": {"kernel": k - target + c[None, :], "bias": c + k.sum(0)}}

  g = grads64(w)
  eta = 0.01
  t = {"kernel": np.abs(w["dense"]["kernel"]) + eta, "bias": np.ones(4)}
  tg = {k: t[k] * g["dense"][k] for k in t}
  norm = np.sqrt(sum(np.sum(v ** 2) for v in tg.values()))
  rho = 0.5
  w_adv = {"dense": {k: w["dense"][k] + rho * t[k] ** 2 * g["dense"][k] / norm for k in t}}
  expected = jax.tree.map(lambda x, d: x - LR * d, w, grads64(w_adv))

  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), w)

  def grad_fn(p):
    k, c = p["dense"]["kernel"], p["dense"]["bias"]
    return {"dense": {"kernel": k - target + c[None, :], "bias": c + k.sum(0)}}

  got = sam_sgd_step(sam_jax.asam(rho, eta=eta), params, grad_fn)
  assert max_abs_diff(got, expected) < 1e-5
  # Scaling the biases too (mask all True) gives a different step: the mask matters.
  everywhere = sam_jax.asam(rho, eta=eta, adaptive_mask=jax.tree.map(lambda _: True, params))
  assert max_abs_diff(sam_sgd_step(everywhere, params, grad_fn), expected) > 1e-4


# --- a tiny MLP with hand-written float64 backprop as the oracle ---


def mlp_data(seed=3):
  rng = np.random.default_rng(seed)
  params = {
      "w1": rng.standard_normal((5, 8)) * 0.5,
      "b1": rng.standard_normal(8) * 0.1,
      "w2": rng.standard_normal((8, 3)) * 0.5,
      "b2": rng.standard_normal(3) * 0.1
  }
  x = rng.standard_normal((16, 5))
  y = rng.integers(0, 3, 16)
  return params, x, y


def mlp_grads64(p, x, y):
  """Gradient of mean softmax cross-entropy of tanh MLP, by hand."""
  h = np.tanh(x @ p["w1"] + p["b1"])
  z = h @ p["w2"] + p["b2"]
  prob = np.exp(z - z.max(1, keepdims=True))
  prob /= prob.sum(1, keepdims=True)
  dz = (prob - np.eye(3)[y]) / len(y)
  dh = dz @ p["w2"].T * (1 - h ** 2)
  return {"w1": x.T @ dh, "b1": dh.sum(0), "w2": h.T @ dz, "b2": dz.sum(0)}


def mlp_loss(p, x, y):
  z = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y))


@pytest.mark.parametrize("adaptive", [False, True])
def test_mlp_update_matches_hand_written_float64_backprop(adaptive):
  w, x, y = mlp_data()
  g = mlp_grads64(w, x, y)
  if adaptive:  # ASAM with T = |w| + eta on w1, w2 and 1 on the biases (named b*: all scaled)
    t = {k: np.abs(v) + 0.01 for k, v in w.items()}
  else:
    t = {k: np.ones_like(v) for k, v in w.items()}
  norm = np.sqrt(sum(np.sum((t[k] * g[k]) ** 2) for k in w))
  w_adv = {k: w[k] + RHO * t[k] ** 2 * g[k] / norm for k in w}
  g_adv = mlp_grads64(w_adv, x, y)
  expected = {k: w[k] - LR * g_adv[k] for k in w}

  params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), w)
  grad_fn = jax.grad(lambda p: mlp_loss(p, jnp.asarray(x, jnp.float32), y))
  got = sam_sgd_step(sam_jax.sam(RHO, adaptive=adaptive), params, grad_fn)
  assert max_abs_diff(got, expected) < 1e-5


def test_equals_optax_contrib_sam_in_opaque_mode():
  w, x, y = mlp_data(seed=4)
  params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), w)
  grad_fn = jax.grad(lambda p: mlp_loss(p, jnp.asarray(x, jnp.float32), y))
  ours = optax.chain(sam_jax.sam(RHO), optax.sgd(LR, momentum=0.9, nesterov=True))
  theirs = optax.contrib.sam(
      optax.sgd(LR, momentum=0.9, nesterov=True),
      optax.chain(optax.contrib.normalize(), optax.sgd(RHO)), sync_period=2, opaque_mode=True)
  p_ours, p_theirs = params, params
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  for _ in range(5):
    u, s_ours = ours.update(grad_fn(p_ours), s_ours, p_ours, grad_fn=grad_fn)
    p_ours = optax.apply_updates(p_ours, u)
    u, s_theirs = theirs.update(
        grad_fn(p_theirs), s_theirs, p_theirs, grad_fn=lambda p, _: grad_fn(p))
    p_theirs = optax.apply_updates(p_theirs, u)
  assert max_abs_diff(p_ours, p_theirs) < 1e-6
  assert max_abs_diff(p_ours, params) > 1e-2  # they moved


def test_rho_zero_is_the_base_optimizer_bit_for_bit():
  w, x, y = mlp_data(seed=5)
  params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), w)
  grad_fn = jax.grad(lambda p: mlp_loss(p, jnp.asarray(x, jnp.float32), y))

  def never_called(_):
    raise AssertionError("rho = 0 must not evaluate the perturbed gradient")

  base = optax.sgd(LR, momentum=0.9, nesterov=True)
  with_sam = optax.chain(sam_jax.sam(0.0), optax.clip_by_global_norm(1e9), base)
  p_base, p_sam = params, params
  s_base, s_sam = base.init(params), with_sam.init(params)
  for _ in range(4):
    u, s_base = base.update(grad_fn(p_base), s_base, p_base)
    p_base = optax.apply_updates(p_base, u)
    u, s_sam = with_sam.update(grad_fn(p_sam), s_sam, p_sam, grad_fn=never_called)
    p_sam = optax.apply_updates(p_sam, u)
  for a, b in zip(jax.tree.leaves(p_base), jax.tree.leaves(p_sam)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs", [{}, {"p": np.inf}, {"p": 3.0}, {"p": 1}, {"adaptive": True}])
def test_zero_gradient_gives_zero_perturbation_not_nan(kwargs):
  params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  seen = []

  def grad_fn(p):
    seen.append(p)
    return jax.tree.map(lambda v: v * 2.0, p)

  tx = sam_jax.sam(RHO, **kwargs)
  out, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p, grad_fn=grad_fn))(zeros, params)
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(out))
  assert max_abs_diff(out, jax.tree.map(lambda v: v * 2.0, params)) == 0.0  # eps = 0


def test_missing_grad_fn_is_a_clear_error():
  tx = sam_jax.sam(RHO)
  params = {"w": jnp.ones(3)}
  with pytest.raises(ValueError, match="grad_fn"):
    tx.update(params, tx.init(params), params)


def test_sync_axis_name_perturbs_every_replica_with_the_mean_gradient():
  a, b, w = quadratic(seed=6)
  offsets = np.random.default_rng(7).standard_normal((4, len(b)))  # one b per replica
  params = {"kernel": jnp.asarray(w, jnp.float32)}

  def replica_grad(b_r):
    return lambda p: {"kernel": jnp.asarray(a, jnp.float32) @ p["kernel"] + b_r}

  def step(b_r, sync):
    tx = sam_jax.sam(RHO, sync_axis_name="r" if sync else None)
    grad_fn = replica_grad(b_r)
    return tx.update(grad_fn(params), tx.init(params), params, grad_fn=grad_fn)[0]["kernel"]

  b_all = b + offsets
  synced = jax.vmap(lambda b_r: step(b_r, True), axis_name="r")(jnp.asarray(b_all, jnp.float32))
  own = jax.vmap(lambda b_r: step(b_r, False), axis_name="r")(jnp.asarray(b_all, jnp.float32))
  g_mean = a @ w + b_all.mean(0)
  for r in range(4):
    eps_shared = RHO * g_mean / np.linalg.norm(g_mean)
    np.testing.assert_allclose(synced[r], a @ (w + eps_shared) + b_all[r], rtol=1e-5, atol=1e-6)
    g_r = a @ w + b_all[r]
    np.testing.assert_allclose(own[r], a @ (w + RHO * g_r / np.linalg.norm(g_r)) + b_all[r],
                               rtol=1e-5, atol=1e-6)


def test_cross_replica_mean_averages_over_the_named_axis():
  tx = sam_jax.cross_replica_mean("r")
  x = jnp.arange(12.0).reshape(4, 3)
  out = jax.vmap(lambda u: tx.update({"u": u}, tx.init(None))[0]["u"], axis_name="r")(x)
  np.testing.assert_allclose(out, np.broadcast_to(x.mean(0), (4, 3)))


def test_p_outside_one_to_infinity_is_rejected():
  with pytest.raises(ValueError, match="p in"):
    sam_jax.dual_direction({"g": jnp.ones(3)}, p=0.5)
  with pytest.raises(ValueError, match="p in"):
    sam_jax.sam(RHO, p=0.5)  # refused when the transformation is built, not at its first use


def test_a_traced_rho_is_the_python_rho_inside_jit():
  """rho may be a traced array (a schedule, GSAM's rho_t): no Python branch on its value,
  and a traced 0 gives the clean gradient, through grad_fn at w + 0."""
  a, b, w = quadratic(seed=8)
  params = {"kernel": jnp.asarray(w, jnp.float32)}
  grad_fn = quadratic_grad_fn(a, b)

  @jax.jit
  def step(rho):
    return sam_sgd_step(sam_jax.sam(rho), params, grad_fn)

  for rho in (0.0, RHO):
    expected = sam_sgd_step(sam_jax.sam(rho), params, grad_fn)
    np.testing.assert_allclose(step(jnp.float32(rho))["kernel"], expected["kernel"], rtol=1e-6)
  clean = {"kernel": params["kernel"] - LR * grad_fn(params)["kernel"]}
  np.testing.assert_allclose(step(jnp.float32(0.0))["kernel"], clean["kernel"], rtol=1e-6)


def test_a_jitted_step_with_aux_is_compiled_once():
  """aux_init of Python floats is kept strongly typed, as the aux the update returns, so
  that the state a step returns is a cache hit for the next call (not a second compile)."""
  a, b, w = quadratic(seed=9)
  params = {"kernel": jnp.asarray(w, jnp.float32)}
  grad = quadratic_grad_fn(a, b)
  tx = sam_jax.sam(RHO, aux_init={"loss": 0.0})

  @jax.jit
  def step(params, state):
    updates, state = tx.update(
        grad(params), state, params, grad_fn=lambda p: (grad(p), {
            "loss": jnp.sum(p["kernel"])
        }))
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(3):
    params, state = step(params, state)
  assert step._cache_size() == 1
