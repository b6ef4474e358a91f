"""bSAM (Moellenhoff and Khan, ICLR 2023): SAM as a relaxation of Bayes, a Gaussian posterior
N(w, 1/(N s)) learnt with SAM's two passes, and its predictive distribution."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax.sam import AxisName, GradFn, SamState, find_state, gradient, init_state, required

Schedule = Callable[[jax.Array], jax.Array]


class BayesianSamState(NamedTuple):
  """bSAM's counter and aux (`SamState`), its momentum and its precision s (per parameter,
  the posterior's variance being 1/(N s)); the same on every replica."""
  sam: SamState
  momentum: optax.Updates
  precision: optax.Updates


def posterior_sample(params: optax.Params, precision: optax.Updates, num_data: float,
                     key: jax.Array) -> optax.Params:
  """theta = w + n / sqrt(N s), n ~ N(0, I): a draw of bSAM's posterior N(w, 1/(N s)),
  as team-approx-bayes/bayesian-sam optim.py:129-131 (training) and test.py:110-113 (the
  predictive's samples). One key per leaf, split from `key`."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.tree.unflatten(treedef, list(jax.random.split(key, len(leaves))))
  return jax.tree.map(
      lambda w, s, k: w +
      (jax.random.normal(k, w.shape, w.dtype) / jnp.sqrt(num_data * s)).astype(w.dtype), params,
      precision, keys)


def bayesian_sam(learning_rate: float | Schedule, *, rho: float = 0.01, beta1: float = 0.9,
                 beta2: float = 0.999, prior_precision: float = 40.0, num_data: float,
                 init_precision: float = 1.0, damping: float = 0.1, seed: int = 0,
                 axis_name: AxisName | None = None,
                 aux_init: Any = None) -> optax.GradientTransformationExtraArgs:
  r"""bSAM (Moellenhoff and Khan, ICLR 2023, "SAM as an Optimal Relaxation of Bayes",
  arXiv 2210.01620): the whole optimizer, not a transformation in front of one.

  As the authors' JAX code (team-approx-bayes/bayesian-sam optim.py:103-176), with
  delta = prior_precision / N the prior's weight decay and s_0 = init_precision:

  .. math::

      \theta &= w + n / \sqrt{N s}, \quad n \sim \mathcal{N}(0, I)
          \qquad \text{(a posterior sample)} \\
      g &= \nabla L(\theta) \\
      g_\epsilon &= \nabla L(w + \rho \, g / s)
          \qquad \text{(the ascent, scaled by } 1/s \text{, not normalised)} \\
      m &\leftarrow \beta_1 m + (1 - \beta_1) (g_\epsilon + \delta w) \\
      w &\leftarrow w - \mathrm{lr} \; m / s \qquad (s \text{ before its update}) \\
      s &\leftarrow \beta_2 s + (1 - \beta_2) (|g| \sqrt{s} + \mathrm{damping} + \delta)

  Each replica draws its own noise and computes its own g and g_eps on its own examples,
  as the authors' `batchsplit` sub-batches (m-sharpness); g_eps and |g| sqrt(s) are then
  averaged over `axis_name`, so w, m and s stay the same on every replica. The noise key
  is (seed, update count, replica). The clean gradient passed to `update` is not used:
  bSAM's ascent starts from the gradient at a noisy sample, which it computes with
  `grad_fn` (a train step that knows this skips its clean backward pass,
  `family.registry`'s `clean_gradient`).

  Defaults: the authors' CIFAR-10/100 command (README.md: alpha 0.5, beta1 0.9, beta2 0.999,
  priorprec 40, rho 0.01, batchsplit 8, dafactor 4; train.py:103-106: custominit 1,
  damping 0.1). `num_data` is N: the training examples times the authors' data
  augmentation factor (train.py:147).

  Returns:
    A transformation whose updates are w's change (-lr m / s); apply them with
    `optax.apply_updates`. Its state's `precision` gives the posterior
    (`posterior_sample`).
  """
  delta = prior_precision / num_data
  schedule = learning_rate if callable(learning_rate) else (lambda count: learning_rate)

  def init_fn(params):
    return BayesianSamState(
        init_state(aux_init), jax.tree.map(jnp.zeros_like, params),
        jax.tree.map(lambda w: jnp.full_like(w, init_precision), params))

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None, **extra_args):
    del updates, extra_args  # the ascent starts from a posterior sample's gradient instead
    params, grad_fn = required("bSAM", params, grad_fn)
    s, count = state.precision, state.sam.count
    key = jax.random.fold_in(jax.random.key(seed), count)
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    g, _ = gradient(grad_fn, posterior_sample(params, s, num_data, key), state.sam)
    ascent = jax.tree.map(lambda w, g, s: w + rho * g / s, params, g, s)
    g_eps, aux = gradient(grad_fn, ascent, state.sam)
    scale = jax.tree.map(lambda g, s: jnp.abs(g) * jnp.sqrt(s), g, s)
    if axis_name is not None:
      g_eps, scale = jax.lax.pmean((g_eps, scale), axis_name)
    momentum = jax.tree.map(lambda m, g, w: beta1 * m + (1 - beta1) * (g + delta * w),
                            state.momentum, g_eps, params)
    lr = schedule(count)
    new_updates = jax.tree.map(lambda m, s: (-lr * m / s).astype(m.dtype), momentum, s)
    precision = jax.tree.map(lambda s, h: beta2 * s + (1 - beta2) * (h + damping + delta), s, scale)
    return new_updates, BayesianSamState(SamState(count + 1, aux), momentum, precision)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def precision(opt_state: Any) -> optax.Updates | None:
  """bSAM's precision s in an optimizer state, or None when it holds no bSAM."""
  state = find_state(opt_state, BayesianSamState)
  return None if state is None else state.precision
