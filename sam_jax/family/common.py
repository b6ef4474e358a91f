"""Small tree operations the SAM family's transformations share (their state and
`grad_fn` protocol are `sam.py`'s: `SamState`, `init_state`, `required`, `gradient`)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]


def dot(a: optax.Updates, b: optax.Updates) -> jax.Array | int:
  """<a, b> over the whole tree (0 for empty trees)."""
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def combine(a: float | jax.Array, x: optax.Updates, b: float | jax.Array,
            y: optax.Updates) -> optax.Updates:
  """a x + b y, leaf by leaf, in the leaves' dtype."""
  return jax.tree.map(lambda u, v: (a * u + b * v).astype(u.dtype), x, y)
