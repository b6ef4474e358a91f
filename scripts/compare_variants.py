"""The SAM family side by side on the offline digits: accuracy, sharpness and wall time.

    source scripts/setup_env.sh
    python scripts/compare_variants.py --out=workdirs/digits_reproduction

Trains `configs/digits_sharpness.py`'s cells `NOISE,sam,variant=V` for every variant of
its `VARIANTS` over three seeds, on clean labels and 40% label noise, next to SGD and
SAM (the cells of `scripts/reproduce_digits.py`, shared with it when --out is the same
folder, so they are not trained again), analyses each final model the same way
(Hessian lambda_max, m-sharpness) and writes variants.md to --out: test accuracy,
lambda_max and training wall time per variant with 95% intervals over the seeds, and
variants.json, every run's numbers (`scripts/plot_frontier.py` plots them).
Resumable like the reproduction: a run whose analysis exists is not trained again.
"""

import json
import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import reproduce_digits  # noqa: E402  (the shared training and analysis of one run)
from configs.digits_sharpness import VARIANTS  # noqa: E402
from sam_jax.analysis.intervals import cell  # noqa: E402

# --out, --seeds, --noise, --epochs, --jobs, --data_dir, --sharpness_m and --lanczos_steps
# are the reproduction's flags, with other defaults here.
flags.FLAGS.set_default("noise", ["0", "40"])
flags.FLAGS.set_default("jobs", 1)  # one run at a time: honest wall times
_VARIANTS = flags.DEFINE_list("variants", ["sgd", *VARIANTS], "Rows: sgd and VARIANTS' names.")


def run_list(seeds: list[int], noise_levels: list[str], variants: list[str]) -> list[dict]:
  """(cell, seed, name) of every run; SGD and SAM keep the reproduction's names."""
  runs = []
  for seed in seeds:
    for noise in noise_levels:
      for variant in variants:
        if variant in ("sgd", "sam"):
          run = {"cell": f"{noise},{variant}", "name": f"{noise}_{variant}_s{seed}"}
        else:
          run = {"cell": f"{noise},sam,variant={variant}", "name": f"{noise}_{variant}_s{seed}"}
        runs.append({**run, "seed": seed, "variant": variant})
  return runs


def table(runs: list[dict], variants: list[str], noise_levels: list[int]) -> str:
  """variants.md: one row per variant, accuracy and lambda_max per noise level, wall time."""
  head = " | ".join(f"{n}% noise: accuracy % | lambda_max" for n in noise_levels)
  lines = [
      "| variant | " + head + " | training time (s) |",
      "| --- | " + " | ".join("--- | ---" for _ in noise_levels) + " | --- |"
  ]
  for variant in variants:
    group = [r for r in runs if r["variant"] == variant]
    cells = []
    for noise in noise_levels:
      at = [r for r in group if r["noise"] == noise]
      cells += [
          cell([100 - 100 * r["test_error"] for r in at]),
          cell([r["lambda_max"] for r in at])
      ]
    seconds = [r["seconds"]["train"] for r in group if r.get("seconds")]
    lines.append(f"| {variant} | " + " | ".join(cells) + f" | {cell(seconds, 1, 0)} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  options = flags.FLAGS
  out = os.path.abspath(options.out)
  variants = _VARIANTS.value
  unknown = [v for v in variants if v != "sgd" and v not in VARIANTS]
  if unknown:
    raise SystemExit(f"Unknown variants {unknown}: choose among sgd, {', '.join(VARIANTS)}.")
  runs = run_list([int(s) for s in options.seeds], options.noise, variants)
  args = (out, [int(m) for m in options.sharpness_m], options.lanczos_steps, options.epochs,
          options.data_dir)
  done = reproduce_digits.train_all(runs, args, options.jobs)
  command = "python scripts/compare_variants.py " + " ".join(sys.argv[1:])
  text = (f"`{command.strip()}` ({options.jobs} at a time); seeds {', '.join(options.seeds)}, "
          "mean ± 95% interval (Student t); accuracy on the clean test digits; lambda_max of the "
          "training loss's Hessian; training time per run.\n\n" +
          table(done, variants, sorted({r["noise"] for r in done})))
  with open(os.path.join(out, "variants.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "variants.json"), "w") as f:  # scripts/plot_frontier.py reads it
    json.dump([{k: v for k, v in r.items() if k != "density"} for r in done], f, indent=1)
  print(text)


if __name__ == "__main__":
  app.run(main)
