"""The cheaper members of the SAM family: fewer second passes (SAM every k steps or at
random, LookSAM), a smaller second pass (ESAM) or none (Momentum-SAM)."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sam_jax.family.common import combine, dot
from sam_jax.sam import (AxisName, GradFn, SamState, find_state, gradient, init_state, perturb,
                         required)


def sam_step_due(count: int | np.integer | jax.Array, *, every: int = 1, probability: float = 1.0,
                 seed: int = 0, start: int = 0) -> Any:
  """Whether update number `count` (0-based) is a SAM step of `sometimes`: count >= start,
  (count + 1) % every == 0 and a Bernoulli(probability) draw u(seed, count) < probability.

  u is a hash of (seed, count) (`uniform_hash`), the same computed by numpy for a Python or
  numpy `count` on the host and by jax.numpy for a traced one, so a loop that decides on
  the host (`sam_step=`) runs the steps a `lax.cond` would, without touching a device.
  """
  host = isinstance(count, (int, np.integer))
  due = (np if host else jnp).logical_and((count + 1) % every == 0, count >= start)
  if probability < 1.0:
    draw = uniform_hash(count, seed, np if host else jnp)
    due = (np if host else jnp).logical_and(due, draw < probability)
  return due


def uniform_hash(count: Any, seed: int, xp: Any = jnp) -> Any:
  """A number in [0, 1) from (seed, count): murmur3's 32-bit finaliser of count times the
  golden ratio XOR an odd function of the seed, its top 24 bits over 2^24. `xp` is numpy
  or jax.numpy (uint32 arithmetic wraps alike in both)."""
  h = xp.reshape(xp.asarray(count).astype(xp.uint32), (1,))  # arrays: numpy scalars warn
  h = h * xp.uint32(0x9E3779B9) ^ xp.uint32((seed * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF)
  for shift, multiplier in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
    h = (h ^ (h >> shift)) * xp.uint32(multiplier)
  h = h ^ (h >> 16)
  return ((h >> 8).astype(xp.float32) / xp.float32(2 ** 24))[0]


def sometimes(inner: optax.GradientTransformationExtraArgs, *, every: int = 1,
              probability: float = 1.0, seed: int = 0,
              start: int = 0) -> optax.GradientTransformationExtraArgs:
  """Runs a SAM transformation on some steps only; the others pass the clean gradient on.

  `every=k`: SAM on steps t (0-based) with (t + 1) % k == 0, as MosaicML Composer's SAM
  `interval` (composer/algorithms/sam/sam.py:92); k = 1 is SAM at every step.
  `probability=p`: SAM with probability p at each step, a Bernoulli draw from
  (seed, t) that every replica shares: randomized SAM (RST, Zhao et al. 2022,
  constant schedule p(t) = p). `start=s`: SAM from step s on only, plain steps before:
  late-phase SAM (Zhou et al., ICLR 2025, zzp1012/SAM-in-Late-Phase
  script/ERM_to_SAM.py:104, which switches at an epoch and keeps a separate SGD momentum
  for each phase; here one base optimizer runs throughout). See `sam_step_due`. The
  skipped steps are plain steps of
  the base optimizer on the clean gradient and do not compute the second pass: a
  `lax.cond` on a predicate that is the same on every replica stays a branch under vmap
  and shard_map. The extra argument `sam_step=True/False` (a Python bool) decides
  instead, without a cond: XLA:CPU runs convolution gradients in a cond branch far
  slower (see `convolution.py`), so the training loop compiles one program of
  each kind and picks one per step. The inner state (and its aux, the loss at w + eps a
  train step logs) keeps the last SAM step's.
  """
  if every < 1 or not 0.0 <= probability <= 1.0:
    raise ValueError(f"sometimes needs every >= 1 and probability in [0, 1], got {every}, "
                     f"{probability}.")

  def init_fn(params):
    return (jnp.zeros([], jnp.int32), inner.init(params))

  def update_fn(updates, state, params=None, *, sam_step: bool | None = None, **extra_args):
    count, inner_state = state

    def run():
      return inner.update(updates, inner_state, params, **extra_args)

    def skip():
      return updates, inner_state

    if sam_step is None:
      updates, inner_state = jax.lax.cond(
          sam_step_due(count, every=every, probability=probability, seed=seed, start=start), run,
          skip)
    else:
      updates, inner_state = run() if sam_step else skip()
    return updates, (count + 1, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class LookSamState(NamedTuple):
  """LookSAM's counter and aux (`SamState`; its count is of every update) and g_v, the
  SAM gradient's part orthogonal to g."""
  sam: SamState
  orthogonal: optax.Updates


def looksam(rho: float, *, every: int = 5, alpha: float = 0.7, axis_name: AxisName | None = None,
            eps: float = 1e-12, aux_init: Any = None,
            **perturb_kwargs) -> optax.GradientTransformationExtraArgs:
  r"""LookSAM (Liu et al., CVPR 2022, arXiv 2203.02714, Algorithm 1): SAM every k steps.

  On steps t % k == 0 (the first step included), the SAM gradient g_s = grad L(w + eps)
  and its part orthogonal to the clean gradient g are kept:

  .. math::

      g_v = g_s - \frac{\langle g, g_s \rangle}{\|g\|^2} \, g

  On the k - 1 steps between, there is no second pass: the update gradient is

  .. math::

      g + \alpha \, \frac{\|g\|}{\|g_v\|} \, g_v.

  Norms are over the whole tree, as the paper (kozistr/pytorch_optimizer's LookSAM,
  optimizer/sam.py:825-836, takes them per tensor). With replicas (`axis_name`), each
  perturbs with its own g (m-sharpness), but g, g_s and so g_v and ||g|| are the means
  over the replicas, as data-parallel LookSAM sees them: per-replica g_v and ||g|| would
  add alpha times a replica's (noisy, large) gradient norm to the mean gradient in a
  stale direction. k = 1 is SAM. Defaults k = 5, alpha = 0.7 (LookSAM-5; the paper also
  runs k = 10). alpha fixes the reused part's norm at alpha ||g||, whatever the norm of
  SAM's own g_v (docs/digits_reproduction/variants.md compares alphas).
  `perturb_kwargs` go to `sam.perturb` (ASAM, p). As in `sometimes`,
  `sam_step=True/False` decides without a cond.
  """
  if every < 1:
    raise ValueError(f"LookSAM needs every >= 1, got {every}.")

  def mean(tree):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

  def init_fn(params):
    return LookSamState(init_state(aux_init), jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None,
                sam_step: bool | None = None, **extra_args):
    del extra_args
    params, grad_fn = required("LookSAM", params, grad_fn)
    grads, mean_grads = updates, mean(updates)

    def full():
      sam_grads, aux = gradient(grad_fn, perturb(params, grads, rho, eps=eps, **perturb_kwargs),
                                state.sam)
      mean_sam = mean(sam_grads)
      along = dot(mean_grads, mean_sam) / (dot(mean_grads, mean_grads) + eps)
      return sam_grads, aux, combine(1.0, mean_sam, -along, mean_grads)

    def reuse():
      scale = alpha * optax.tree_utils.tree_norm(mean_grads) / (
          optax.tree_utils.tree_norm(state.orthogonal) + eps)
      return combine(1.0, grads, scale, state.orthogonal), state.sam.aux, state.orthogonal

    if sam_step is None:
      updates, aux, orthogonal = jax.lax.cond(state.sam.count % every == 0, full, reuse)
    else:  # decided by the caller, as `sometimes`
      updates, aux, orthogonal = full() if sam_step else reuse()
    return updates, LookSamState(SamState(state.sam.count + 1, aux), orthogonal)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def esam(rho: float, *, beta: float = 0.5, gamma: float = 0.5, seed: int = 0, eps: float = 1e-12,
         aux_init: Any = None) -> optax.GradientTransformationExtraArgs:
  r"""ESAM (Du et al., ICLR 2022, arXiv 2110.03141): stochastic weight perturbation and
  sharpness-sensitive data selection.

  SWP: each parameter tensor is perturbed with probability beta (one Bernoulli draw per
  tensor from (seed, step), shared by all replicas as the authors' equal seeds do; M is 1
  on the chosen tensors):

  .. math::

      \epsilon = \frac{\rho}{\beta} \, \frac{M \odot g}{\|M \odot g\|}

  (dydjw9/Efficient_SAM utils/Esam.py:26-33, 60-61: the norm over the kept tensors, so
  ||eps|| = rho / beta). SDS: the per-example loss increase l_i(w + eps) - l_i(w) is
  measured by one forward pass, and the second backward pass sees only the
  round(gamma m) examples where it is largest (:78-117; the authors' strict `>` against
  the k-th value keeps k - 1); the update gradient is the mean loss's gradient on them.
  The authors draw the mask one step ahead; here it is drawn in the step it is used.
  beta = gamma = 1 is SAM. Defaults beta = 0.5, gamma = 0.5 (run.sh: WRN-28-10, rho 0.1;
  ResNet-18 uses beta 0.6); docs/digits_reproduction/variants.md compares them under
  label noise.

  Needs `example_losses` (the clean per-example losses, [m]) and `example_losses_fn(p)`
  (the same at p) besides `grad_fn(p, examples=indices)`.
  """
  if not (0 < beta <= 1 and 0 < gamma <= 1):
    raise ValueError(f"ESAM needs beta and gamma in (0, 1], got {beta}, {gamma}.")

  def init_fn(params):
    del params
    return init_state(aux_init)

  def update_fn(updates, state, params=None, *, grad_fn: GradFn | None = None,
                example_losses: jax.Array | None = None,
                example_losses_fn: Callable[[optax.Params], jax.Array] | None = None, **extra_args):
    del extra_args
    params, grad_fn = required("ESAM", params, grad_fn)
    leaves, treedef = jax.tree.flatten(updates)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), state.count), len(leaves))
    kept = [
        g * jax.random.bernoulli(k, beta).astype(g.dtype) if beta < 1 else g
        for g, k in zip(leaves, keys)
    ]
    kept = jax.tree.unflatten(treedef, kept)
    scale = rho / beta / (optax.tree_utils.tree_norm(kept) + eps)
    perturbed = jax.tree.map(lambda w, g: w + (scale * g).astype(w.dtype), params, kept)
    if gamma == 1:
      updates, aux = gradient(grad_fn, perturbed, state)
      return updates, SamState(state.count + 1, aux)
    if example_losses is None or example_losses_fn is None:
      raise ValueError("ESAM's data selection (gamma < 1) needs example_losses and "
                       "example_losses_fn: steps.train_step passes them.")
    increase = example_losses_fn(perturbed) - example_losses
    selected = max(1, round(gamma * increase.shape[0]))
    _, examples = jax.lax.top_k(increase, selected)
    updates, aux = gradient(grad_fn, perturbed, state, examples=examples)
    return updates, SamState(state.count + 1, aux)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class MomentumPerturbationState(NamedTuple):
  """Momentum-SAM's current perturbation: the stored parameters are w + perturbation."""
  perturbation: optax.Updates


def momentum_perturbation(rho: float, eps: float = 1e-12) -> optax.GradientTransformation:
  r"""Momentum-SAM (Becker et al. 2024, arXiv 2401.12033): SAM without a second pass.

  The gradient is taken at w~_t = w_t - rho v_t / ||v_t||, v the momentum buffer, i.e.
  one step further along the descent direction (Algorithm 1), and the parameters kept
  are w~ itself, as the authors' code (MarlonBecker/MSAM optimizer/msam.py:72-94). Put
  this last in the chain: with u_t the chain's update of w, it returns

  .. math::

      u_t + e_{t+1} - e_t, \qquad e_{t+1} = \rho \, u_t / \|u_t\|,

  which is -rho v/||v|| for heavy-ball SGD (u = -lr v; the authors' setting, Nesterov
  off; with Nesterov it follows the Nesterov update). e_0 = 0: the first step is plain.
  Evaluate `unperturbed(params, opt_state)` = w (msam.py's move_back before evaluation).
  The authors use rho = 3 where SAM uses 0.2 (their README).
  """
  def init_fn(params):
    return MomentumPerturbationState(jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    scale = rho / (optax.tree_utils.tree_norm(updates) + eps)
    perturbation = jax.tree.map(lambda u: (scale * u).astype(u.dtype), updates)
    updates = jax.tree.map(lambda u, new, old: u + new - old, updates, perturbation,
                           state.perturbation)
    return updates, MomentumPerturbationState(perturbation)

  return optax.GradientTransformation(init_fn, update_fn)


def unperturbed(params: optax.Params, opt_state: Any) -> optax.Params:
  """The parameters without the perturbation of a `momentum_perturbation` in `opt_state`
  (the params themselves when it has none)."""
  state = find_state(opt_state, MomentumPerturbationState)
  if state is None:
    return params
  return jax.tree.map(lambda w, e: w - e, params, state.perturbation)
