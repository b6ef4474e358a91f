# pyright: strict, reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false, reportUnknownLambdaType=false
# pyright: reportMissingTypeStubs=false
"""Sharpness-Aware Minimization (SAM, ASAM) as Optax gradient transformations.

Pure JAX + Optax: no Flax, no TensorFlow. Chain it in front of any optimizer::

    tx = optax.chain(
        sam_jax.sam(0.05),                      # gradient at w + eps
        sam_jax.cross_replica_mean("replica"),  # average over replicas (m-sharpness)
        optax.clip_by_global_norm(5.0),
        optax.sgd(lr, momentum=0.9, nesterov=True),
    )
    updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn)

where `grads` is the clean gradient of the loss at `params` and `grad_fn(p)` returns
the gradient of the same loss (same batch, same dropout randomness) at `p`.

This is also the protocol of the whole family (`sam_jax.family`): every variant in front
of the optimizer takes `grad_fn`, keeps a `SamState` (its count of updates and the latest
aux of `grad_fn`), and a train step reads that aux back with `perturbed_aux`.
"""

from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import jax
import jax.numpy as jnp
import optax

from sam_jax.masks import masked, not_bias

AxisName = Hashable | Sequence[Hashable]
# grad_fn(p, **options) -> the gradient at p, or (gradient, aux) when the state keeps an aux.
GradFn = Callable[..., Any]
State = TypeVar("State")


def dual_direction(grads: optax.Updates, p: float = 2.0, eps: float = 1e-12) -> optax.Updates:
  r"""The unit-p-norm direction that maximises the first-order loss increase.

  Solves argmax_{||e||_p <= 1} <e, g> over the whole tree (Foret et al. 2021, eq. 2):

  .. math::

      e = \operatorname{sign}(g) \odot |g|^{q-1} / \|g\|_q^{q-1}, \qquad 1/p + 1/q = 1,

  computed as sign(g) (|g| / (||g||_q + eps))^(q-1) so that it cannot overflow and a
  zero gradient gives e = 0. Special cases: p = 2 gives g / (||g||_2 + eps); p = inf
  gives sign(g); p = 1 puts all the mass on the largest |g_i| (ties share it equally).

  Args:
    grads: a pytree of gradients g.
    p: the norm of the perturbation ball, in [1, inf].
    eps: added to the norm; keeps the direction finite (zero) at g = 0.

  Returns:
    A pytree like `grads` with ||e||_p = 1 (or 0 where g = 0).
  """
  if not 1.0 <= p <= float("inf"):
    raise ValueError(f"SAM needs a norm p in [1, inf], got p={p}.")
  leaves = jax.tree.leaves(grads)
  if p == 2:
    norm = optax.tree_utils.tree_norm(grads)
    return jax.tree.map(lambda g: g / (norm + eps).astype(g.dtype), grads)
  if p == float("inf"):
    return jax.tree.map(jnp.sign, grads)
  largest = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in leaves]))
  if p == 1:
    is_max = jax.tree.map(lambda g: (jnp.abs(g) == largest) & (largest > 0), grads)
    count = sum(jnp.sum(m) for m in jax.tree.leaves(is_max))
    return jax.tree.map(lambda g, m: jnp.sign(g) * m / jnp.maximum(count, 1).astype(g.dtype), grads,
                        is_max)
  q = p / (p - 1.0)
  # ||g||_q computed relative to max|g| so that |g|^q neither overflows nor underflows.
  safe_largest = jnp.maximum(largest, jnp.finfo(jnp.float32).tiny)
  norm = largest * sum(jnp.sum((jnp.abs(g) / safe_largest) ** q) for g in leaves) ** (1.0 / q)
  return jax.tree.map(lambda g: jnp.sign(g) * (jnp.abs(g) / (norm + eps)) ** (q - 1.0), grads)


def group_mean(tree: Any, axis_name: AxisName, group_size: int | None = None) -> Any:
  """`lax.pmean` over `axis_name`, or over consecutive groups of `group_size` replicas.

  Group k holds the replicas whose index along `axis_name` (a tuple of axes counts as one
  flattened axis) is in [k G, (k + 1) G). This is the original's `--inner_group_size`
  (`pmean(..., axis_index_groups=local_replica_groups(G))`, google-research/sam
  flax_training.py:95-142, 539-545), which also grouped consecutive replicas, ordered
  by TPU tray so that groups were physically close. Built from one psum (it works under
  shard_map and vmap alike, where axis_index_groups does not): each replica writes its
  value into its group's slot of a [num_groups, ...] buffer, costing num_groups copies.
  """
  if group_size is None:
    return jax.lax.pmean(tree, axis_name)
  num_replicas = jax.lax.axis_size(axis_name)
  if group_size < 1 or num_replicas % group_size:
    raise ValueError(f"A perturbation group of {group_size} replicas does not divide the "
                     f"{num_replicas} replicas.")
  num_groups = num_replicas // group_size
  mine = jax.lax.axis_index(axis_name) // group_size

  def leaf(x: jax.Array) -> jax.Array:
    slots = jnp.zeros((num_groups,) + x.shape, x.dtype).at[mine].set(x)
    return jax.lax.psum(slots, axis_name)[mine] / group_size

  return jax.tree.map(leaf, tree)


def perturb(params: optax.Params, grads: optax.Updates, rho: float | jax.Array, *,
            adaptive: bool = False, eta: float = 0.01, p: float = 2.0, eps: float = 1e-12,
            adaptive_mask: Any | Callable[[optax.Params], Any] = not_bias,
            perturbation_mask: Any | Callable[[optax.Params], Any] | None = None) -> optax.Params:
  """w + eps(g): the worst point of the rho-ball around w to first order (see `sam`).

  SAM: eps = rho * dual_direction(g, p); ASAM (`adaptive`): eps = rho * T_w
  dual_direction(T_w g, p) with T_w = |w| + eta where `adaptive_mask` is True, else 1.
  With `perturbation_mask` M, g is first restricted to M (g_M, zero elsewhere): the ball
  lies in M's coordinates and the norm is ||g_M||.
  """
  grads = masked(grads, perturbation_mask, like=params)
  if adaptive:
    mask = adaptive_mask(params) if callable(adaptive_mask) else adaptive_mask
    scale = jax.tree.map(lambda w, m: jnp.where(m,
                                                jnp.abs(w) + eta, jnp.ones_like(w)), params, mask)
    direction = jax.tree.map(jnp.multiply, scale,
                             dual_direction(jax.tree.map(jnp.multiply, scale, grads), p, eps))
  else:
    direction = dual_direction(grads, p, eps)
  return jax.tree.map(lambda w, d: w + (rho * d).astype(w.dtype), params, direction)


def strongly_typed(tree: Any) -> Any:
  """`tree` as arrays of their own dtypes: a Python 0.0 would be weakly typed, while the aux
  an update returns is not, so a jitted step would compile again at its second call."""
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), tree)


class SamState(NamedTuple):
  """The state of `sam` and of every variant in front of the optimizer."""
  #: The number of updates that ran the second pass.
  count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]  (optax's name)
  #: The latest aux of `grad_fn` (e.g. the loss at w + eps); None without `aux_init`.
  aux: Any


def init_state(aux_init: Any = None) -> SamState:
  """Count 0 and `aux_init` (as strongly typed arrays), or no aux."""
  return SamState(jnp.zeros([], jnp.int32), None if aux_init is None else strongly_typed(aux_init))


def required(name: str, params: optax.Params | None,
             grad_fn: GradFn | None) -> tuple[optax.Params, GradFn]:
  """The params and grad_fn that an update needs (optax's signature makes both optional).

  Raises:
    ValueError: naming the call that provides them.
  """
  if params is None or grad_fn is None:
    raise ValueError(f"{name} needs the current params and a grad_fn: call "
                     "tx.update(grads, state, params, grad_fn=grad_fn), where grad_fn(p) is the "
                     "gradient of the same loss on the same batch at parameters p.")
  return params, grad_fn


def gradient(grad_fn: GradFn, params: optax.Params, state: SamState,
             **options: Any) -> tuple[optax.Updates, Any]:
  """(gradient, aux) of `grad_fn(params, **options)`; aux None when the state keeps none."""
  if state.aux is None:
    return grad_fn(params, **options), None
  return cast(tuple[optax.Updates, Any], grad_fn(params, **options))


def find_state(opt_state: Any, kind: type[State]) -> State | None:
  """The first state of type `kind` inside an optimizer state (chains and wrappers
  included), or None."""
  found = jax.tree.leaves(opt_state, is_leaf=lambda node: isinstance(node, kind))
  return next((node for node in found if isinstance(node, kind)), None)


def perturbed_aux(opt_state: Any) -> Any:
  """The aux of the last second pass in an optimizer state (see `sam(aux_init=...)`), or
  None when no transformation in it keeps one."""
  state = find_state(opt_state, SamState)
  return None if state is None else state.aux


def sam(
    rho: float | jax.Array,
    *,
    adaptive: bool = False,
    eta: float = 0.01,
    p: float = 2.0,
    eps: float = 1e-12,
    sync_axis_name: AxisName | None = None,
    sync_group_size: int | None = None,
    adaptive_mask: Any | Callable[[optax.Params], Any] = not_bias,
    perturbation_mask: Any | Callable[[optax.Params], Any] | None = None,
    aux_init: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""SAM: replaces the gradient at w by the gradient at the worst nearby point w + eps.

  With g the clean gradient, e(g) = `dual_direction(g, p)` and grad L(w + eps) computed by
  `grad_fn(w + eps)` (Foret et al., ICLR 2021, arXiv 2010.01412, eq. 2-3):

  .. math::

      \epsilon &= \rho \, e(g) \qquad (p = 2\!: \ \rho \, g / \|g\|_2) \\
      g_\mathrm{SAM} &= \nabla L(w + \epsilon)

  ASAM (`adaptive=True`; Kwon et al., ICML 2021, arXiv 2102.11600) measures the ball in
  the parameter-scaled metric T_w = |w| + eta (elementwise):

  .. math::

      \epsilon = \rho \, T_w \, e(T_w g) \qquad (p = 2\!: \ \rho \, T_w^2 g / \|T_w g\|_2)

  with T_w = 1 on the leaves where `adaptive_mask` is False (by default the biases and
  BatchNorm betas, as the official ASAM). ASAM typically wants rho ~10x SAM's.

  SAM-ON (`perturbation_mask=normalization_layers`; Mueller et al., NeurIPS 2023,
  arXiv 2306.04226) perturbs only the normalization layers' parameters, g restricted to
  them before the direction is taken; every parameter is still updated.

  The transformation only changes which gradient comes out; averaging across
  replicas, clipping and the base optimizer follow it in an `optax.chain`, and the
  base optimizer then updates w (not w + eps).

  Args:
    rho: radius of the neighbourhood. A Python 0 returns the clean gradient
      bit-for-bit without calling `grad_fn`, so the chain equals its base optimizer.
    adaptive: use ASAM's scale-invariant neighbourhood.
    eta: ASAM's offset in T_w = |w| + eta.
    p: norm of the neighbourhood, in [1, inf]; 2 is the paper's choice.
    eps: numerical guard added to the norm; a zero gradient gives eps = 0, not NaN.
    sync_axis_name: if set, g is averaged over this named axis (or tuple of axes)
      before perturbing, so all replicas share one perturbation (the original
      `--sync_perturbations`). If None, each replica perturbs with its own g: the
      m-sharpness behaviour, m being the examples per replica.
    sync_group_size: with `sync_axis_name`, average g only within consecutive groups of
      this many replicas (`group_mean`; the original `--inner_group_size`): each group
      shares one perturbation. None: all replicas.
    adaptive_mask: pytree of bools like the params, or a function params -> mask,
      saying where ASAM's T_w applies.
    perturbation_mask: pytree of bools like the params, or a function params -> mask:
      the parameters perturbed (None: all). A mask of all True is SAM.
    aux_init: if given, `grad_fn(p)` returns (gradient, aux) with aux shaped like this
      pytree, and the state (`SamState`) keeps the latest aux: how a train step reads the
      loss at w + eps without a third pass (`perturbed_aux`). With rho = 0 it stays
      `aux_init`.

  Returns:
    A `GradientTransformationExtraArgs` whose update is called as
    `update(grads, state, params, grad_fn=grad_fn)`.
  """
  if not 1.0 <= p <= float("inf"):
    raise ValueError(f"SAM needs a norm p in [1, inf], got p={p}.")
  skip = isinstance(rho, (int, float)) and rho == 0

  def init_fn(params: optax.Params) -> SamState:
    del params
    return init_state(aux_init)

  def update_fn(updates: optax.Updates, state: optax.OptState, params: optax.Params | None = None,
                *, grad_fn: GradFn | None = None,
                **extra_args: Any) -> tuple[optax.Updates, optax.OptState]:
    del extra_args
    if skip:
      return updates, state
    params, grad_fn = required("sam_jax.sam", params, grad_fn)
    state = cast(SamState, state)
    g = updates if sync_axis_name is None else group_mean(updates, sync_axis_name, sync_group_size)
    perturbed = perturb(params, g, rho, adaptive=adaptive, eta=eta, p=p, eps=eps,
                        adaptive_mask=adaptive_mask, perturbation_mask=perturbation_mask)
    grads, aux = gradient(grad_fn, perturbed, state)
    return grads, SamState(state.count + 1, aux)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def asam(rho: float | jax.Array, *, eta: float = 0.01,
         **kwargs: Any) -> optax.GradientTransformationExtraArgs:
  """ASAM (Kwon et al. 2021): `sam(rho, adaptive=True, eta=eta, ...)`."""
  return sam(rho, adaptive=True, eta=eta, **kwargs)


def cross_replica_mean(axis_name: AxisName) -> optax.GradientTransformation:
  """Averages the updates over a named axis (or tuple of axes): `lax.pmean`.

  Put it after `sam(...)` and before clipping: each replica's SAM gradient comes from
  its own sub-batch and perturbation, and the base optimizer sees their mean.
  """
  def init_fn(params: optax.Params) -> optax.OptState:
    del params
    return optax.EmptyState()

  def update_fn(updates: optax.Updates, state: optax.OptState,
                params: optax.Params | None = None) -> tuple[optax.Updates, optax.OptState]:
    del params
    return jax.lax.pmean(updates, axis_name), state

  return optax.GradientTransformation(init_fn, update_fn)
