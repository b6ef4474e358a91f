"""sam-jax: Sharpness-Aware Minimization in JAX, Flax and Optax."""

import importlib.metadata

from sam_jax import xla_cpu

xla_cpu.set_defaults()  # before JAX starts its CPU backend

# pylint: disable=wrong-import-position
from sam_jax.sam import asam, cross_replica_mean, dual_direction, sam  # noqa: E402
from sam_jax import family  # noqa: E402  (the SAM family: sam_jax.family.gsam, ...)


def _version() -> str:
  """The installed package's version: pyproject.toml's, the one place it is written."""
  try:
    return importlib.metadata.version("sam-jax")
  except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
    return "0+unknown"


__version__ = _version()
__all__ = ["__version__", "asam", "cross_replica_mean", "dual_direction", "family", "sam"]
