"""The SAM family's efficiency frontier: what each variant keeps of SAM's effect, per step cost.

    python scripts/compare_variants.py --out=workdirs/digits_reproduction --jobs=2
    python scripts/benchmark_step.py --study_variants --json=workdirs/costs.json
    python scripts/plot_frontier.py --study=workdirs/digits_reproduction \\
        --costs=workdirs/costs.json --out=docs/digits_reproduction

Reads the study's variants.json (every run's test error and Hessian lambda_max) and the
benchmark's step times, writes frontier.png to --out and prints the table of
docs/digits_reproduction/variants.md: for each variant, its step cost as a multiple of
SGD's against (left) its accuracy gain over SGD at 40% label noise, in points, and
(right) its lambda_max reduction from SGD's on clean labels as a fraction of SAM's, means
over the seeds (the table has both as fractions). The goal line: a variant at <= 1.15x
SGD's step cost keeping >= 90% of SAM's accuracy gain and >= 80% of its lambda_max
reduction.
"""

import argparse
import json
import os
import statistics

GOAL_COST, GOAL_GAIN, GOAL_FLATTENING = 1.15, 0.9, 0.8


def mean_of(runs: list[dict], variant: str, noise: int, key: str) -> float:
  values = [r[key] for r in runs if r["variant"] == variant and r["noise"] == noise]
  if not values:
    raise SystemExit(f"The study has no {variant} run at {noise}% noise: run compare_variants.")
  return statistics.mean(values)


def fractions(runs: list[dict]) -> dict[str, tuple[float, float, float, float]]:
  """variant -> (accuracy gain over SGD at 40% noise in points, as a fraction of SAM's,
  lambda_max reduction from SGD's on clean labels, as a fraction of SAM's)."""
  variants = {r["variant"] for r in runs}
  accuracy = {v: 100 * (1 - mean_of(runs, v, 40, "test_error")) for v in variants}
  sharpness = {v: mean_of(runs, v, 0, "lambda_max") for v in accuracy}
  gain_sam = accuracy["sam"] - accuracy["sgd"]
  flattening_sam = sharpness["sgd"] - sharpness["sam"]
  return {
      v: (accuracy[v] - accuracy["sgd"], (accuracy[v] - accuracy["sgd"]) / gain_sam,
          sharpness["sgd"] - sharpness[v], (sharpness["sgd"] - sharpness[v]) / flattening_sam
         ) for v in accuracy if v != "sgd"
  }


def table(points: dict, costs: dict) -> str:
  lines = [
      "| variant | step cost / SGD's | accuracy gain at 40% noise (points) | of SAM's | "
      "lambda_max reduction, clean | of SAM's | meets the goal |", "| --- " * 7 + "|"
  ]
  for variant, (gain, gain_fraction, flattening,
                flattening_fraction) in sorted(points.items(), key=lambda item: costs[item[0]]):
    meets = (
        costs[variant] <= GOAL_COST and gain_fraction >= GOAL_GAIN
        and flattening_fraction >= GOAL_FLATTENING)
    lines.append(f"| {variant} | {costs[variant]:.2f} | {gain:+.2f} | {100 * gain_fraction:.0f}% | "
                 f"{flattening:+.2f} | {100 * flattening_fraction:.0f}% | "
                 f"{'yes' if meets else 'no'} |")
  return "\n".join(lines) + "\n"


def plot(points: dict, costs: dict, path: str, setup: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  figure = Figure(figsize=(12, 5))
  axes = figure.subplots(1, 2)
  sam_gain = points["sam"][0]  # accuracy in points: SAM's own gain may be within the noise
  for ax, index, goal, reference, label in ((axes[0], 0, GOAL_GAIN * sam_gain, sam_gain,
                                             "accuracy gain at 40% noise (points)"),
                                            (axes[1], 3, GOAL_FLATTENING, 1.0,
                                             "lambda_max reduction, clean, fraction of SAM's")):
    for variant, values in points.items():
      ax.scatter(costs[variant], values[index], color="C1" if variant == "sam" else "C0")
      ax.annotate(variant, (costs[variant], values[index]), fontsize=8, xytext=(3, 3),
                  textcoords="offset points")
    ax.axvline(GOAL_COST, color="grey", linestyle=":")
    ax.axhline(goal, color="grey", linestyle=":")
    ax.axhline(reference, color="C1", linewidth=0.5)
    ax.set_xlabel(f"step cost / SGD's ({setup})")
    ax.set_ylabel(label)
  axes[0].set_title("Accuracy gain over SGD, 40% label noise (digits, 3 seeds)")
  axes[0].set_ylim(-5, 2)  # LookSAM and ESAM collapse far below (the printed table)
  axes[1].set_title("Hessian lambda_max reduction from SGD, clean labels")
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def main():
  parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
  parser.add_argument("--study", required=True, help="compare_variants.py's --out")
  parser.add_argument("--costs", required=True, help="benchmark_step.py --json's file")
  parser.add_argument("--out", required=True, help="folder for frontier.png")
  args = parser.parse_args()
  with open(os.path.join(args.study, "variants.json")) as f:
    runs = json.load(f)
  with open(args.costs) as f:
    measured = json.load(f)
  costs = {name: row["ratio_to_sgd"] for name, row in measured["rows"].items()}
  points = fractions(runs)
  missing = sorted(set(points) - set(costs))
  if missing:
    raise SystemExit(f"No step cost for {missing}: run benchmark_step.py --study_variants.")
  os.makedirs(args.out, exist_ok=True)
  plot(points, costs, os.path.join(args.out, "frontier.png"), measured["setup"])
  print(table(points, costs))


if __name__ == "__main__":
  main()
