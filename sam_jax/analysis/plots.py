"""Figures of the analyses (matplotlib, written as PNG files), after the SAM paper's Fig. 3,
and a run's training curves.

Two rhos meet in the m-sharpness figures: the radius the sharpness is *measured* at (in the
title) and the one each run was *trained* with (in the legend, `trained_with`).

The figures are `matplotlib.figure.Figure`s drawn without pyplot, so importing this module
leaves matplotlib's backend and pyplot's figures as they were.
"""

import matplotlib
from matplotlib.figure import Figure
import numpy as np


def _save(figure: Figure, path: str) -> None:
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def spectral_densities(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str,
                       title: str = "Hessian eigenvalue density") -> None:
  """Densities on a log scale, one per label: {label: (grid, density, lambda_max)}.

  A dashed line marks each curve's lambda_max, as Figure 3 (left) of the paper.
  """
  figure = Figure(figsize=(6, 4))
  axes = figure.subplots()
  # matplotlib types tab10 as a Colormap, without the colors of the ListedColormap it is.
  colors = matplotlib.colormaps["tab10"].colors  # pyright: ignore[reportAttributeAccessIssue]
  for (label, (grid, density, lambda_max)), color in zip(curves.items(), colors):
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


def trained_with(rho: float) -> str:
  """A run's legend label: how it was trained, worded apart from a measurement's rho."""
  return f"trained with SAM rho = {rho:g}" if rho else "trained with SGD (rho = 0)"


def m_sharpness(curves: dict[str, tuple[list[int], list[float], list[float] | None]], path: str,
                rho: float, about: str = "") -> None:
  """m-sharpness against m (log scale), one curve per label: {label: (ms, values, errors)}.

  `rho` is the radius of the measurement (Foret et al. 2021, Sec. 4.1), named in the title
  with `about`; label the curves with `trained_with`. `errors` (half-widths of an interval)
  may be None.
  """
  figure = Figure(figsize=(6, 4))
  axes = figure.subplots()
  for label, (ms, values, errors) in curves.items():
    axes.errorbar(ms, values, yerr=errors, marker="o", capsize=3, label=label)
  axes.set_xscale("log", base=2)
  axes.set_xlabel("m (examples per subset)")
  axes.set_ylabel("m-sharpness (loss increase per example)")
  axes.set_title(f"m-sharpness measured at rho = {rho:g}" + (f"\n{about}" if about else ""))
  axes.legend()
  _save(figure, path)


# The panels of `training_curves`: (y label, the scalar tags the training loop writes).
CURVE_PANELS = (("loss", ("train_loss", "test_loss")), ("error", ("train_error", "test_error")),
                ("learning rate", ("learning_rate",)))


def training_curves(scalars: dict[str, dict[int, float]], path: str, title: str) -> None:
  """Train and test loss, train and test error, and the learning rate against step.

  `scalars` is {tag: {step: value}}, a run's TensorBoard scalars (`events.read_scalars`);
  a tag it lacks is not drawn. With an EMA, test_* are the EMA model's (raw_test_* are
  left out).
  """
  figure = Figure(figsize=(13, 3.8))
  panels = figure.subplots(1, len(CURVE_PANELS))
  for axes, (name, tags) in zip(panels, CURVE_PANELS):
    for tag in tags:
      steps = sorted(scalars.get(tag, {}))
      if steps:
        axes.plot(steps, [scalars[tag][s] for s in steps], label=tag.replace("_", " "),
                  marker="o" if len(steps) <= 50 else None, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel(name)
    if axes.lines:
      axes.legend()
  figure.suptitle(title)
  _save(figure, path)
