"""sam-jax: Sharpness-Aware Minimization in JAX, Flax and Optax."""

from sam_jax import xla_cpu

xla_cpu.set_defaults()  # before JAX starts its CPU backend

# pylint: disable=wrong-import-position
from sam_jax.sam import asam, cross_replica_mean, dual_direction, sam  # noqa: E402
from sam_jax import family  # noqa: E402  (the SAM family: sam_jax.family.gsam, ...)

__all__ = ["asam", "cross_replica_mean", "dual_direction", "family", "sam"]
