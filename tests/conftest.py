"""Test set-up: 8 virtual CPU devices (set before JAX is imported) and shared helpers."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402


def max_abs_diff(a, b) -> float:
  """Largest elementwise |a - b| over two pytrees of the same structure (any devices)."""
  diffs = jax.tree.map(lambda x, y: np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y))), a, b)
  return float(max(jax.tree.leaves(diffs)))
