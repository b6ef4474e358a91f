"""Table 4's label-noise robustness at small scale: SGD and SAM memorising noisy digits.

    source scripts/setup_env.sh
    python scripts/reproduce_label_noise.py --out=workdirs/digits_label_noise

Trains every cell of `configs/digits_label_noise.py` (ResNet-8, 200 epochs; 0, 40 and 80%
symmetric label noise; SGD and SAM) over three seeds, and writes to --out `results.md`:
per noise level and optimizer, the clean test accuracy and the training error on the
noisy labels the run learnt from (mean ± 95% Student-t interval over the seeds), and the
difference SAM - SGD of the accuracy, paired by seed (both see the same noisy labels).
Each run's workdir is --out/runs/NOISE_OPTIMIZER_sSEED; a run that finished (results.json)
is not trained again, so an interrupted reproduction continues where it stopped.
"""

import concurrent.futures
import json
import multiprocessing
import os
import sys
import time

from absl import app, flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sam_jax.analysis.intervals import cell  # noqa: E402  (after the path)

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line (defined when run, so that tests can import the functions)."""
  flags.DEFINE_string("out", "workdirs/digits_label_noise", "Output folder.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every cell.")
  flags.DEFINE_list("noise", ["0", "40", "80"], "Label noise levels (%).")
  flags.DEFINE_integer("epochs", None, "Override the config's 200 epochs (quick checks).")
  flags.DEFINE_integer("jobs", 2, "Runs trained side by side (processes).")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's).")


def train(run: dict, out: str, epochs: int | None, data_dir: str | None) -> dict:
  """Trains one run (resuming its workdir); returns the run with its results.json."""
  workdir = os.path.join(out, "runs", run["name"])
  results_path = os.path.join(workdir, "results.json")
  if not os.path.exists(results_path):
    # In the spawned workers only: the parent needs neither JAX nor TensorFlow.
    from configs import digits_label_noise  # pylint: disable=import-outside-toplevel
    from sam_jax import loop  # pylint: disable=import-outside-toplevel
    config = digits_label_noise.get_config(f"{run['noise']},{run['optimizer']}")
    config.seed, config.data_dir = run["seed"], data_dir
    if epochs:
      config.num_epochs = epochs
    loop.train_and_evaluate(config, workdir)
  with open(results_path) as f:
    return {**run, **json.load(f)}


def table(runs: list[dict]) -> str:
  """results.md's table: accuracy and noisy-label training error per cell, SAM - SGD."""
  lines = ["| noise % | SGD test accuracy | SAM test accuracy | SAM - SGD (paired) "
           "| SGD train error on noisy labels | SAM train error on noisy labels |",
           "| --- | --- | --- | --- | --- | --- |"]
  for noise in sorted({r["noise"] for r in runs}):
    by_seed = {o: {r["seed"]: r for r in runs if (r["noise"], r["optimizer"]) == (noise, o)}
               for o in ("sgd", "sam")}
    seeds = sorted(set(by_seed["sgd"]) & set(by_seed["sam"]))
    accuracy = {o: [100 - 100 * by_seed[o][s]["test_error"] for s in seeds] for o in by_seed}
    train_error = {o: [by_seed[o][s]["train_eval_error"] for s in seeds] for o in by_seed}
    lines.append(f"| {noise} | {cell(accuracy['sgd'])} | {cell(accuracy['sam'])} "
                 f"| {cell(np.subtract(accuracy['sam'], accuracy['sgd']))} "
                 f"| {cell(train_error['sgd'], 100)} | {cell(train_error['sam'], 100)} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  out = os.path.abspath(FLAGS.out)
  runs = [{"noise": int(noise), "optimizer": optimizer, "seed": int(seed),
           "name": f"{noise}_{optimizer}_s{seed}"}
          for seed in FLAGS.seeds for noise in FLAGS.noise for optimizer in ("sgd", "sam")]
  started, done = time.monotonic(), []
  context = multiprocessing.get_context("spawn")  # fresh JAX and TF in every worker
  with concurrent.futures.ProcessPoolExecutor(FLAGS.jobs, mp_context=context) as pool:
    futures = [pool.submit(train, run, out, FLAGS.epochs, FLAGS.data_dir) for run in runs]
    for future in concurrent.futures.as_completed(futures):
      result = future.result()
      done.append(result)
      print(f"[{len(done)}/{len(runs)} {time.monotonic() - started:.0f} s] {result['name']}: "
            f"test accuracy {100 - 100 * result['test_error']:.1f}%, training error on the "
            f"noisy labels {100 * result['train_eval_error']:.1f}%", flush=True)
  minutes = (time.monotonic() - started) / 60
  epochs = {round(r["epochs"]) for r in done}
  command = "python scripts/reproduce_label_noise.py " + " ".join(sys.argv[1:])
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"`{command.strip()}` ({minutes:.1f} minutes with --jobs={FLAGS.jobs}; "
            f"{', '.join(map(str, sorted(epochs)))} epochs; seeds "
            f"{', '.join(FLAGS.seeds)}; mean ± 95% interval over the seeds)\n\n")
    f.write(table(done))
  with open(os.path.join(out, "runs.json"), "w") as f:
    json.dump(sorted(done, key=lambda r: r["name"]), f, indent=2)
  print(open(os.path.join(out, "results.md")).read())


if __name__ == "__main__":
  define_flags()
  app.run(main)
