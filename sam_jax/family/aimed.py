"""The members of the SAM family that aim the perturbation with a memory of past gradients:
F-SAM (the full-gradient component removed) and VaSSO (a variance-suppressed direction)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sam_jax.family.common import combine
from sam_jax.sam import AxisName, GradFn, SamState, gradient, init_state, perturb, required


class AveragedSamState(NamedTuple):
  """A variant's counter and aux (`SamState`) and its average of past gradients, the same on
  every replica; before the first update it is unset (the first gradient replaces it)."""
  sam: SamState
  average: optax.Updates


def _first_or(count: jax.Array, first: optax.Updates, later: optax.Updates) -> optax.Updates:
  """`first` at update 0, `later` after."""
  return jax.tree.map(lambda a, b: jnp.where(count == 0, a, b), first, later)


def _averaged(name: str, rho: float, direction, new_average, eps: float, aux_init: Any,
              axis_name: AxisName | None, perturb_kwargs: dict[str, Any]):
  """The transformation that perturbs by rho along `direction(g, average, count)` (as
  `sam.perturb`: rho d / ||d||, or ASAM's, masked, ...) and then keeps
  `new_average(mean g, average, count)`, mean g over `axis_name` (each replica perturbs
  with its own g; the average is of the replicas' mean gradient, the same on all). Inside
  `sometimes` (every k, late phase) it runs, and its average moves, on the SAM steps only."""
  def init_fn(params):
    return AveragedSamState(init_state(aux_init), jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None, **extra_args):
    del extra_args
    params, grad_fn = required(name, params, grad_fn)
    count = state.sam.count
    mean = updates if axis_name is None else jax.lax.pmean(updates, axis_name)
    d = direction(updates, state.average, count)
    grads, aux = gradient(grad_fn, perturb(params, d, rho, eps=eps, **perturb_kwargs), state.sam)
    return grads, AveragedSamState(
        SamState(count + 1, aux), new_average(mean, state.average, count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def friendly_sam(rho: float, *, sigma: float = 1.0, lmbda: float = 0.6, eps: float = 1e-12,
                 axis_name: AxisName | None = None, aux_init: Any = None,
                 **perturb_kwargs) -> optax.GradientTransformationExtraArgs:
  r"""F-SAM (Li et al., CVPR 2024, "Friendly Sharpness-Aware Minimization"): the ascent
  without the full-gradient component, estimated by an EMA m of past gradients.

  As the authors' code (nblt/F-SAM utils.py:444-461, `FriendlySAM`), at update t:

  .. math::

      d_t &= g_t - \sigma \, m_{t-1} \qquad (d_0 = g_0 \text{: the first step is SAM}) \\
      m_t &= \lambda \, m_{t-1} + (1 - \lambda) \, g_t \qquad (m_0 = g_0) \\
      \epsilon_t &= \rho \, d_t / \|d_t\|

  (lambda is `lmbda`), the direction taking the EMA before it is updated. sigma = 0 is
  SAM. Defaults: the authors' CIFAR runs (run.sh: rho 0.2, sigma 1, lmbda 0.6). With
  replicas, m follows the replicas' mean gradient (`axis_name`); each perturbs with its
  own g_t.
  """
  def direction(g, m, count):
    return _first_or(count, g, combine(1.0, g, -sigma, m))

  def new_average(mean, m, count):
    return _first_or(count, mean, combine(lmbda, m, 1.0 - lmbda, mean))

  return _averaged("F-SAM", rho, direction, new_average, eps, aux_init, axis_name, perturb_kwargs)


def vasso(rho: float, *, theta: float = 0.9, eps: float = 1e-7, axis_name: AxisName | None = None,
          aux_init: Any = None, **perturb_kwargs) -> optax.GradientTransformationExtraArgs:
  r"""VaSSO (Li and Giannakis, NeurIPS 2023, "Enhancing Sharpness-Aware Optimization Through
  Variance Suppression"): the perturbation along an EMA of the stochastic gradients.

  As the authors' code (BingcongLi/VaSSO solver/vasso.py:41-53, `VASSO.first_step`):

  .. math::

      d_t &= (1 - \theta) \, d_{t-1} + \theta \, g_t \qquad (d_0 = g_0) \\
      \epsilon_t &= \rho \, d_t / \|d_t\|

  theta = 1 is SAM. Defaults: theta 0.9 (configs/defaulf_cfg.py:61; train.sh also runs
  CIFAR-100 with rho 0.2, theta 0.9) and the authors' eps 1e-7 in the norm. With
  replicas, each perturbs along (1 - theta) d_{t-1} + theta (its own g_t) and the state
  keeps the replicas' mean (`axis_name`).
  """
  def direction(g, d, count):
    return _first_or(count, g, combine(1.0 - theta, d, theta, g))

  def new_average(mean, d, count):
    return _first_or(count, mean, combine(1.0 - theta, d, theta, mean))

  return _averaged("VaSSO", rho, direction, new_average, eps, aux_init, axis_name, perturb_kwargs)
