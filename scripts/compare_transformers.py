"""SAM on a tiny ViT and MLP-Mixer with AdamW, on the offline digits: accuracy and sharpness.

    source scripts/setup_env.sh
    python scripts/compare_transformers.py --out=workdirs/digits_transformers

Trains every cell of `configs/digits_transformers.py` (AdamW, SAM and GSAM on clean labels
and 40% label noise, ViT and Mixer) over three seeds, analyses each final model the same
way as the ResNet study (`scripts/reproduce_digits.py`: Hessian lambda_max by Lanczos over
the training set, m-sharpness) and writes transformers.md to --out: test accuracy, its
gain over AdamW, training error and lambda_max per cell with 95% intervals over the seeds.
Resumable: a run whose analysis exists is not trained again.
"""

import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import reproduce_digits  # noqa: E402  (the shared training and analysis of one run)
from configs.digits_transformers import MODELS, NOISE, OPTIMIZERS  # noqa: E402
from sam_jax.analysis.intervals import cell  # noqa: E402

# --out, --seeds, --noise, --epochs, --jobs, --data_dir, --sharpness_m and --lanczos_steps
# are the reproduction's flags, with other defaults here.
flags.FLAGS.set_default("out", "workdirs/digits_transformers")
flags.FLAGS.set_default("noise", list(NOISE))


def run_list(seeds: list[int], noise_levels: list[str]) -> list[dict]:
  """(config, cell, seed, name) of every run."""
  return [{
      "config": "digits_transformers",
      "cell": f"{noise},{optimizer},{model}",
      "seed": seed,
      "model": model,
      "name": f"{model}_{noise}_{optimizer}_s{seed}"
  } for seed in seeds for model in MODELS for noise in noise_levels for optimizer in OPTIMIZERS]


def table(runs: list[dict]) -> str:
  """Accuracy, its gain over AdamW (per seed: the same data order and noisy labels), the
  error on the (noisy) training labels and lambda_max, per model, noise and optimizer."""
  lines = [
      "| model | noise % | optimizer | test accuracy % | gain over AdamW (points) "
      "| train error % | lambda_max |", "| --- | --- | --- | --- | --- | --- | --- |"
  ]
  for model in MODELS:
    for noise in sorted({r["noise"] for r in runs}):
      base = {
          r["seed"]: r["test_error"]
          for r in reproduce_digits.select(runs, model=model, noise=noise, optimizer="adamw")
      }
      for optimizer in OPTIMIZERS:
        group = reproduce_digits.select(runs, model=model, noise=noise, optimizer=optimizer)
        if not group:
          continue
        gains = [100 * (base[r["seed"]] - r["test_error"]) for r in group if r["seed"] in base]
        lines.append(f"| {model} | {noise} | {optimizer} | "
                     f"{cell([100 - 100 * r['test_error'] for r in group])} | "
                     f"{cell(gains) if optimizer != 'adamw' else ''} | "
                     f"{cell([r['train_error'] for r in group], 100)} | "
                     f"{cell([r['lambda_max'] for r in group])} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  options = flags.FLAGS
  out = os.path.abspath(options.out)
  runs = run_list([int(s) for s in options.seeds], options.noise)
  args = (out, [int(m) for m in options.sharpness_m], options.lanczos_steps, options.epochs,
          options.data_dir)
  started = time.monotonic()
  done = reproduce_digits.train_all(runs, args, options.jobs)
  minutes = (time.monotonic() - started) / 60
  command = "python scripts/compare_transformers.py " + " ".join(sys.argv[1:])
  text = (f"`{command.strip()}` ({options.jobs} at a time, {minutes:.0f} minutes); seeds "
          f"{', '.join(options.seeds)}, mean ± 95% interval (Student t); accuracy on the clean "
          "test digits; lambda_max of the training loss's Hessian.\n\n" + table(done))
  with open(os.path.join(out, "transformers.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
