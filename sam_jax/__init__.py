"""sam-jax: Sharpness-Aware Minimization in JAX, Flax and Optax."""

from sam_jax.sam import asam, cross_replica_mean, dual_direction, sam

__all__ = ["asam", "cross_replica_mean", "dual_direction", "sam"]
