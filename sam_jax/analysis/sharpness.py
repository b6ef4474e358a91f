r"""m-sharpness of a checkpoint: how much the loss of m-example subsets rises within rho.

Foret et al. (ICLR 2021, Sec. 4.1) define it over a training set of N examples split
into disjoint subsets s of m examples, with L_s(w) = sum_{i in s} l_i(w):

.. math::

    \text{$m$-sharpness}(w) = \frac{1}{N} \sum_s \max_{\|\epsilon\|_2 \le \rho}
        \big[L_s(w + \epsilon) - L_s(w)\big]

The inner maximum is taken as SAM takes it, by one ascent step
eps_s = rho g_s / ||g_s||_2 with g_s = grad L_s(w): a first-order estimate and a lower
bound of the true maximum. m = N is the sharpness SAM's derivation starts from; SAM
training with m examples per replica minimises the m-sharpness plus the loss.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sam_jax import replicas
from sam_jax.analysis.loss import ExampleLossFn
from sam_jax.errors import UsageError
from sam_jax.sam import dual_direction


def m_sharpness(loss_fn: ExampleLossFn, params, examples: dict[str, np.ndarray], m: int, rho: float,
                mesh: jax.sharding.Mesh | None = None, batch_size: int = 1024) -> float:
  """The m-sharpness of `params` over all of `examples`, subsets in order.

  Subset r is examples [r m, (r + 1) m), as replica r sees them in a training step. The
  subsets are split over the devices of `mesh` (default: all), each device taking its
  subsets one after the other, and the sums are added with `psum`.

  Args:
    loss_fn: (params, batch) -> per-example losses (see `loss.example_loss_fn`).
    params: the point w.
    examples: {"image", "label"} numpy arrays of N examples, N a multiple of m x devices.
    m: examples per subset.
    rho: radius of the L2 ball.
    mesh: a 1-D device mesh (`replicas.make_mesh`).
    batch_size: examples sent to the devices at once (rounded to whole subsets).

  Returns:
    The m-sharpness, a mean per example.
  """
  mesh = mesh or replicas.make_mesh()
  count = len(examples["label"])
  per_call = m * mesh.size
  if m <= 0 or count % per_call:
    raise UsageError(f"m-sharpness with m={m} over {mesh.size} devices needs a multiple of "
                     f"{per_call} examples, not {count}: pass a number of examples that "
                     f"every m times {mesh.size} divides.")

  step = _chunk_sharpness(loss_fn, m, mesh)
  params = replicas.replicate(params, mesh)
  chunk = per_call * max(1, batch_size // per_call)
  total = 0.0
  for start in range(0, count, chunk):
    batch = {k: examples[k][start:start + chunk] for k in ("image", "label")}
    total += float(step(params, replicas.shard_batch(batch, mesh), rho))
  return total / count


@functools.lru_cache(maxsize=64)
def _chunk_sharpness(loss_fn: ExampleLossFn, m: int, mesh: jax.sharding.Mesh):
  """(params, chunk, rho) -> the chunk's summed m-sharpness, jitted over `mesh`: one
  program per (loss_fn, m, mesh), so each model and rho reuses its compilation."""
  def subset_sharpness(params, subset, rho):
    subset_loss = lambda p: jnp.sum(loss_fn(p, subset))
    loss, grads = jax.value_and_grad(subset_loss)(params)
    eps = jax.tree.map(lambda d: rho * d, dual_direction(grads))
    return subset_loss(jax.tree.map(jnp.add, params, eps)) - loss

  def per_device(params, batch, rho):
    subsets = jax.tree.map(lambda x: x.reshape((-1, m) + x.shape[1:]), batch)
    total = jnp.sum(jax.lax.map(lambda subset: subset_sharpness(params, subset, rho), subsets))
    return jax.lax.psum(total, replicas.REPLICA_AXES)

  return replicas.map_replicas(per_device, mesh)
