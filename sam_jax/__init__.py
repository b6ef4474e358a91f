"""sam-jax: Sharpness-Aware Minimization in JAX, Flax and Optax."""

from sam_jax.sam import asam, cross_replica_mean, dual_direction, sam
from sam_jax import family  # noqa: E402  (the SAM family: sam_jax.family.gsam, ...)

__all__ = ["asam", "cross_replica_mean", "dual_direction", "family", "sam"]
