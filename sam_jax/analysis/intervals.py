"""Means over seeds with their 95% Student-t intervals, as the reproductions report them."""

import math

import numpy as np
from scipy import stats


def interval(values) -> tuple[float, float]:
  """Mean and the half-width of its 95% Student-t interval (nan for one value).

  half-width = t(0.975, n - 1) * s / sqrt(n), s the sample standard deviation (ddof 1).
  """
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return float(values.mean()), float("nan")
  half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
  return float(values.mean()), float(half)


def cell(values, scale: float = 1.0, digits: int = 2) -> str:
  """"mean ± half-width" of `values` * `scale` (the mean alone for one value)."""
  mean, half = interval(np.asarray(values) * scale)
  return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"
