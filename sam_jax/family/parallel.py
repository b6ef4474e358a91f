"""SAMPa (Xie et al., NeurIPS 2024): SAM's two gradients made independent, so that two groups of
replicas compute them at the same time instead of one after the other."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax.family.common import combine
from sam_jax.sam import AxisName, GradFn, SamState, gradient, init_state, perturb, required


class ParallelSamState(NamedTuple):
  """SAMPa's counter and aux (`SamState`), the base optimizer's state, and the gradient at the
  last predicted point y_t (on the batch the ascent replicas see next); the same on every
  replica."""
  sam: SamState
  base: optax.OptState
  lookahead: optax.Updates


def sampa(rho: float, base: optax.GradientTransformation, *, lmbda: float = 0.2,
          axis_name: AxisName, eps: float = 1e-12, aux_init: Any = None,
          **perturb_kwargs: Any) -> optax.GradientTransformationExtraArgs:
  r"""SAMPa, "SAM Parallelized" (Xie, Pethick, Cevher, NeurIPS 2024, arXiv 2410.10683): the
  whole optimizer, `base` included, over replicas in pairs.

  As the authors' code (LIONS-EPFL/SAMPa train.py:46-102), on two groups at step t:

  .. math::

      \tilde x_t &= x_t + \rho \, g_y / \|g_y\|, \quad g_y = \nabla f(y_t; B_{t-1})
          \qquad \text{(from the last step)} \\
      y_{t+1} &= x_t + \mathrm{base}(g_y)
          \qquad \text{(the base optimizer's step, not taken)} \\
      x_{t+1} &= x_t + \mathrm{base}\big((1 - \lambda) \nabla f(\tilde x_t; B_{t-1})
          + \lambda \nabla f(y_{t+1}; B_t)\big)

  with lambda = `lmbda`. Each replica computes one gradient, at its group's point: the even
  replicas grad f(x~_t; B_{t-1}) on the previous batch, the odd ones grad f(y_{t+1}; B_t)
  on the current one (`replicas.paired_batches` lays them out), so SAMPa costs SGD's one
  pass per replica. On the first step g_y = 0: x~ = y = x_0.
  y_{t+1} is what `base` would do with g_y from its current state (SGD: x - lr (g_y + wd x
  + mu buf), the authors' prediction); the ascent is along the odd replicas' mean g_y (one
  perturbation for all). Defaults: the authors' (train.py:151-153: rho 0.1, og = lmbda 0.2).

  Args:
    rho: the radius of the ascent.
    base: the base optimizer (in the binary, the cross-replica mean, clipping, momentum, ...).
    lmbda: the weight of the lookahead gradient grad f(y_{t+1}) in the update.
    axis_name: the replicas' axis (an even number of replicas).
    eps, aux_init, perturb_kwargs: as `sam`'s (the ascent is `sam.perturb`).
  """
  def init_fn(params):
    return ParallelSamState(
        init_state(aux_init), base.init(params), jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None, **extra_args):
    del updates, extra_args  # each replica's one gradient is at its group's point
    params, grad_fn = required("SAMPa", params, grad_fn)
    count, g_y = state.sam.count, state.lookahead
    ascent = perturb(params, g_y, rho, eps=eps, **perturb_kwargs)
    predicted, _ = base.update(g_y, state.base, params)
    lookahead = jax.tree.map(lambda w, u: jnp.where(count == 0, w, w + u), params, predicted)
    odd = jax.lax.axis_index(axis_name) % 2 == 1
    point = jax.tree.map(lambda a, b: jnp.where(odd, b, a), ascent, lookahead)
    g, aux = gradient(grad_fn, point, state.sam)
    ascent_part = jax.tree.map(lambda x: jnp.where(odd, 0, x), g)  # each group's share
    lookahead_part = jax.tree.map(lambda x: jnp.where(odd, x, 0), g)
    pairs = jax.lax.axis_size(axis_name) // 2
    g_ascent, g_lookahead = jax.tree.map(lambda x: x / pairs,
                                         jax.lax.psum((ascent_part, lookahead_part), axis_name))
    new_updates, base_state = base.update(
        combine(1 - lmbda, g_ascent, lmbda, g_lookahead), state.base, params)
    return new_updates, ParallelSamState(SamState(count + 1, aux), base_state, g_lookahead)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
