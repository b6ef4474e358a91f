"""The Hessian of a training loss over a dataset: products, top eigenvalues, spectrum, trace.

Everything is built on one operation, the Hessian-vector product of the mean loss over
a dataset, H v = (1/N) sum_i d^2 l_i(w) v, computed forward-over-reverse per replica,
summed over devices like a training step and accumulated over batches. On top of it:
power iteration with deflation, Lanczos with full reorthogonalisation, the stochastic
Lanczos quadrature (SLQ) spectral density (Ghorbani, Krishnan & Xiao 2019, arXiv
1901.10159; the method of the SAM paper's Figure 3) and Hutchinson's trace estimator.
Vectors are flat float32 arrays over all parameters (`jax.flatten_util.ravel_pytree`
order); the small Lanczos matrices are handled in float64 with numpy.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from sam_jax import replicas
from sam_jax.analysis.loss import ExampleLossFn
from sam_jax.errors import UsageError

HVP = Callable[[jax.Array], jax.Array]  # flat v [dim] -> H v, or rows [k, dim] -> rows of H V


def dataset_hvp(loss_fn: ExampleLossFn, params: Any, batches: Iterable[dict[str, np.ndarray]],
                mesh: jax.sharding.Mesh | None = None) -> tuple[HVP, int]:
  r"""H v of the mean loss over every unmasked example of `batches`, and the dimension.

  .. math::

      H v = \frac{1}{N} \sum_\text{batches}
          \mathrm{jvp}\Big(\nabla \textstyle\sum_i \mathrm{mask}_i \, l_i, \; w; \; v\Big)

  Each batch is split over the devices of `mesh` (default: all) as a training batch is;
  each device takes its forward-over-reverse product, and they are summed with `psum`.
  The batches are placed on the devices once, here.

  Args:
    loss_fn: (params, batch) -> per-example losses (see `loss.example_loss_fn`).
    params: the point w (a pytree of float arrays).
    batches: {"image", "label", optional "mask"} numpy batches whose size splits over
      the devices; padded examples have mask 0.
    mesh: a 1-D device mesh (`replicas.make_mesh`).

  Returns:
    (hvp, dim): hvp maps a flat vector [dim] to the flat H v [dim], and k vectors [k, dim]
    to their k products at once.
  """
  mesh = mesh or replicas.make_mesh()
  flat_params, unravel = ravel_pytree(params)
  params = replicas.replicate(params, mesh)

  def per_replica(params, batch, vectors):
    mask = batch.get("mask", jnp.ones(batch["label"].shape[:1], jnp.float32))
    total_loss = lambda p: jnp.sum(loss_fn(p, batch) * mask)
    product = lambda v: ravel_pytree(jax.jvp(jax.grad(total_loss), (params,), (unravel(v),))[1])[0]
    return jax.lax.psum(jax.vmap(product)(vectors), replicas.REPLICA_AXES)

  step = replicas.map_replicas(per_replica, mesh)
  device_batches, count = [], 0.0
  for batch in batches:
    count += float(np.sum(batch["mask"])) if "mask" in batch else len(batch["label"])
    device_batches.append(replicas.shard_batch(batch, mesh))
  if not count:
    raise UsageError("The Hessian needs at least one (unmasked) example.")

  def hvp(vectors):
    vectors = jnp.asarray(vectors, flat_params.dtype)
    rows = replicas.replicate(vectors.reshape(-1, flat_params.size), mesh)
    # The steps return Any, which picks typeshed's sum overload for ints: it is an Array.
    total: jax.Array = sum(  # pyright: ignore[reportAssignmentType]
        step(params, batch, rows) for batch in device_batches)
    return (total / count).reshape(vectors.shape)

  return hvp, flat_params.size


@functools.partial(jax.jit, static_argnums=(1,))
def _normal_unit(key: jax.Array, dim: int) -> jax.Array:
  vector = jax.random.normal(key, (dim,))
  return vector / jnp.linalg.norm(vector)


@jax.jit
def _orthogonalise(basis: jax.Array, vector: jax.Array) -> jax.Array:
  """vector minus its projection on the rows of `basis`, twice ("twice is enough")."""
  for _ in range(2):
    vector = vector - basis.T @ (basis @ vector)
  return vector


def power_iteration(hvp: HVP, dim: int, k: int, key: jax.Array, max_iterations: int = 200,
                    tolerance: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
  """The k eigenvalues of largest magnitude by power iteration with deflation.

  Eigenpair j iterates v <- A_j v / ||A_j v|| on the deflated operator
  A_j = H - sum_{i<j} lambda_i u_i u_i^T (v also kept orthogonal to the u_i), until the
  Rayleigh quotient lambda = v^T A_j v changes by less than `tolerance` (relative).
  Its error shrinks like (lambda_{j+1}/lambda_j)^(2t): close eigenvalues need many steps.

  Returns:
    (eigenvalues [k], eigenvectors [k, dim]), by decreasing magnitude.
  """
  found = jnp.zeros((k, dim), jnp.float32)
  values = []
  for j in range(k):
    vector = _orthogonalise(found, _normal_unit(jax.random.fold_in(key, j), dim))
    vector = vector / jnp.linalg.norm(vector)
    value = None
    for _ in range(max_iterations):
      # For v orthogonal to the u_i, A_j v = H v; projecting out the u_i keeps it so.
      product = _orthogonalise(found, hvp(vector))
      new_value = float(vector @ product)
      vector = product / jnp.linalg.norm(product)
      converged = value is not None and abs(new_value - value) <= tolerance * abs(new_value)
      value = new_value
      if converged:
        break
    values.append(value)
    found = found.at[j].set(vector)
  order = np.argsort(-np.abs(values))
  return np.asarray(values)[order], np.asarray(found)[order]


@dataclasses.dataclass(frozen=True)
class Tridiagonal:
  """What `lanczos` leaves: Q^T H Q = T with T = tridiag(betas, alphas, betas)."""
  alphas: np.ndarray  # [s] diagonal
  betas: np.ndarray  # [s - 1] off-diagonal

  def ritz(self) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of T (ascending) and the squared first components of its eigenvectors."""
    matrix = np.diag(self.alphas) + np.diag(self.betas, 1) + np.diag(self.betas, -1)
    values, vectors = np.linalg.eigh(matrix)
    return values, vectors[0] ** 2


def lanczos(hvp: HVP, start: jax.Array, num_steps: int) -> Tridiagonal:
  r"""Lanczos tridiagonalisation of H from `start`, with full reorthogonalisation.

  .. math::

      w &= H q_j - \alpha_j q_j - \beta_{j-1} q_{j-1}, \qquad \alpha_j = q_j^\top H q_j, \\
      w &\leftarrow w - Q Q^\top w \ \text{(twice)}, \qquad \beta_j = \|w\|,
          \qquad q_{j+1} = w / \beta_j.

  The whole basis Q (num_steps x dim, float32) is kept on the device, so the Ritz values
  do not come back as ghost copies. Stops early when the Krylov space is invariant.
  """
  dim = start.shape[0]
  basis = jnp.zeros((num_steps, dim), jnp.float32)
  vector = start / jnp.linalg.norm(start)
  alphas, betas = [], []
  for j in range(num_steps):
    basis = basis.at[j].set(vector)
    product = hvp(vector)
    alphas.append(float(vector @ product))
    product = _orthogonalise(basis, product)  # removes alpha_j q_j and beta q_{j-1} too
    beta = float(jnp.linalg.norm(product))
    if j == num_steps - 1 or beta <= 1e-6 * max(abs(a) for a in alphas):
      break
    betas.append(beta)
    vector = product / beta
  return Tridiagonal(np.asarray(alphas), np.asarray(betas))


def top_eigenvalues(hvp: HVP, dim: int, k: int, key: jax.Array, num_steps: int = 80) -> np.ndarray:
  """The k largest eigenvalues (descending), as Ritz values of `num_steps` Lanczos steps."""
  values, _ = lanczos(hvp, _normal_unit(key, dim), min(num_steps, dim)).ritz()
  return values[::-1][:k]


def rademacher(key: jax.Array, dim: int) -> jax.Array:
  """A vector of independent +-1 entries."""
  return jax.random.rademacher(key, (dim,), jnp.float32)


@dataclasses.dataclass(frozen=True)
class SpectralDensity:
  """A smoothed eigenvalue density of H from SLQ, and the quadrature it came from."""
  grid: np.ndarray  # eigenvalue axis
  density: np.ndarray  # integrates to 1 over `grid`
  nodes: np.ndarray  # [vectors, steps] Ritz values
  weights: np.ndarray  # [vectors, steps] quadrature weights; each row sums to 1
  sigma: float  # Gaussian kernel width

  @property
  def lambda_max(self) -> float:
    return float(self.nodes.max())


def spectral_density(hvp: HVP, dim: int, key: jax.Array, num_vectors: int = 3, num_steps: int = 80,
                     num_points: int = 2001, sigma_fraction: float = 0.01) -> SpectralDensity:
  r"""Stochastic Lanczos quadrature estimate of the eigenvalue density of H.

  For each of `num_vectors` Rademacher vectors v, Lanczos gives Ritz values theta_j and
  weights tau_j (squared first components), a Gauss quadrature of v^T f(H) v / ||v||^2.
  Averaged over v:

  .. math::

      \phi(t) = \frac{1}{V} \sum_v \sum_j \tau_j^v \, \mathcal{N}(t; \theta_j^v, \sigma^2),

  with sigma = `sigma_fraction` x (spread of the Ritz values), on a grid reaching 10 sigma
  beyond them, so phi integrates to 1 (Ghorbani et al. 2019, Sec. 3).
  """
  nodes, weights = [], []
  steps = min(num_steps, dim)
  for i in range(num_vectors):
    theta, tau = lanczos(hvp, rademacher(jax.random.fold_in(key, i), dim), steps).ritz()
    pad = steps - len(theta)  # a run that stopped early: zero-weight padding
    nodes.append(np.pad(theta, (0, pad), mode="edge"))
    weights.append(np.pad(tau, (0, pad)))
  nodes, weights = np.stack(nodes), np.stack(weights)
  spread = max(float(nodes.max() - nodes.min()), 1e-12 * max(1.0, float(np.abs(nodes).max())))
  sigma = sigma_fraction * spread
  grid = np.linspace(nodes.min() - 10 * sigma, nodes.max() + 10 * sigma, num_points)
  kernels = np.exp(-0.5 * ((grid[:, None] - nodes.ravel()[None]) / sigma) ** 2)
  density = kernels @ weights.ravel() / (num_vectors * sigma * np.sqrt(2 * np.pi))
  return SpectralDensity(grid, density, nodes, weights, sigma)


def hutchinson_trace(hvp: HVP, dim: int, key: jax.Array, num_probes: int = 100,
                     probes_at_once: int = 1) -> tuple[float, float]:
  """Hutchinson's estimate of tr(H) = E[z^T H z] over Rademacher z, and its standard error.

  Its variance per probe is 2 sum_{i != j} H_ij^2: a Hessian dominated by a few
  eigenvalues needs thousands of probes for a few percent. `probes_at_once` probes share
  one pass over the data (vmapped): faster for small models, slower for convnets on CPU.
  """
  samples = []
  for start in range(0, num_probes, probes_at_once):
    block = jax.vmap(lambda i: rademacher(jax.random.fold_in(key, i), dim))(
        jnp.arange(start, min(start + probes_at_once, num_probes)))
    samples.extend(np.asarray(jnp.sum(block * hvp(block), axis=1)))
  return float(np.mean(samples)), float(np.std(samples, ddof=1) / np.sqrt(num_probes))
