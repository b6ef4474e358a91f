"""sam-jax: Sharpness-Aware Minimization in JAX, Flax and Optax.

Importing it changes no process-wide setting (environment, XLA flags, logging): the
binaries opt in to what they need (`xla_cpu.set_defaults`, `console.quiet_logs`).
"""

import importlib.metadata

from sam_jax import family  # the SAM family: sam_jax.family.gsam, ...
from sam_jax.masks import normalization_layers
from sam_jax.sam import asam, cross_replica_mean, dual_direction, sam


def _version() -> str:
  """The installed package's version: pyproject.toml's, the one place it is written."""
  try:
    return importlib.metadata.version("sam-jax")
  except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    return "0+unknown"


__version__ = _version()
__all__ = [
    "__version__", "asam", "cross_replica_mean", "dual_direction", "family", "normalization_layers",
    "sam"
]
