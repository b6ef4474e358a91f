"""What the SAM family's transformations share: their state and small tree operations."""

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from sam_jax.sam import GradFn, strongly_typed

Schedule = Callable[[jax.Array], jax.Array]


class FamilyState(NamedTuple):
  """A step counter and the latest aux of `grad_fn` (see `sam(aux_init=...)`)."""
  count: jax.Array
  aux: Any


def init_state(aux_init: Any) -> FamilyState:
  """Count 0 and `aux_init` (`sam.strongly_typed`)."""
  aux = None if aux_init is None else strongly_typed(aux_init)
  return FamilyState(jnp.zeros([], jnp.int32), aux)


def required(name: str, params: optax.Params | None,
             grad_fn: GradFn | None) -> tuple[optax.Params, GradFn]:
  """The params and grad_fn that an update needs (optax's signature makes both optional)."""
  if params is None or grad_fn is None:
    raise ValueError(f"{name} needs the current params and a grad_fn: call "
                     "tx.update(grads, state, params, grad_fn=grad_fn).")
  return params, grad_fn


def gradient(grad_fn: GradFn, params: optax.Params, state: FamilyState,
             **kwargs: Any) -> tuple[optax.Updates, Any]:
  """grad_fn(params) and the aux to keep: (gradient, aux)."""
  if state.aux is None:
    return grad_fn(params, **kwargs), None
  return cast(tuple[optax.Updates, Any], grad_fn(params, **kwargs))  # with an aux, (grad, aux)


def dot(a: optax.Updates, b: optax.Updates) -> jax.Array | int:
  """<a, b> over the whole tree (0 for empty trees)."""
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def combine(a: float | jax.Array, x: optax.Updates, b: float | jax.Array,
            y: optax.Updates) -> optax.Updates:
  """a x + b y, leaf by leaf, in the leaves' dtype."""
  return jax.tree.map(lambda u, v: (a * u + b * v).astype(u.dtype), x, y)
