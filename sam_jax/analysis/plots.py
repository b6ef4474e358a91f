"""Figures of the analyses (matplotlib, written as PNG files), after the SAM paper's Fig. 3."""

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)
import numpy as np  # noqa: E402


def _save(figure, path: str) -> None:
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def spectral_densities(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str,
                       title: str = "Hessian eigenvalue density") -> None:
  """Densities on a log scale, one per label: {label: (grid, density, lambda_max)}.

  A dashed line marks each curve's lambda_max, as Figure 3 (left) of the paper.
  """
  figure, axes = plt.subplots(figsize=(6, 4))
  for (label, (grid, density, lambda_max)), color in zip(curves.items(), plt.cm.tab10.colors):
    axes.semilogy(grid, np.maximum(density, 1e-12), color=color,
                  label=f"{label} ($\\lambda_{{max}}$ = {lambda_max:.3g})")
    axes.axvline(lambda_max, color=color, linestyle="--", linewidth=1)
  floor = max(min(d.max() for _, d, _ in curves.values()) * 1e-7, 1e-12)
  axes.set_ylim(bottom=floor)
  axes.set_xlabel("eigenvalue")
  axes.set_ylabel("density")
  axes.set_title(title)
  axes.legend()
  _save(figure, path)


def m_sharpness(curves: dict[str, tuple[list[int], list[float], list[float] | None]],
                path: str, title: str = "m-sharpness") -> None:
  """m-sharpness against m (log scale), one curve per label: {label: (ms, values, errors)}.

  `errors` (half-widths of an interval) may be None.
  """
  figure, axes = plt.subplots(figsize=(6, 4))
  for label, (ms, values, errors) in curves.items():
    axes.errorbar(ms, values, yerr=errors, marker="o", capsize=3, label=label)
  axes.set_xscale("log", base=2)
  axes.set_xlabel("m (examples per subset)")
  axes.set_ylabel("m-sharpness (loss increase per example)")
  axes.set_title(title)
  axes.legend()
  _save(figure, path)
