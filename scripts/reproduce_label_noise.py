"""Table 4's label-noise robustness at small scale: SGD and SAM memorising noisy digits.

    source scripts/setup_env.sh
    python scripts/reproduce_label_noise.py --out=workdirs/digits_label_noise

Trains every cell of `configs/digits_label_noise.py` (ResNet-8, 200 epochs; 0, 40 and 80%
symmetric label noise; SGD and SAM) over three seeds, and writes to --out `results.md`:
per noise level and optimizer, the clean test accuracy and the training error on the
noisy labels the run learnt from (mean ± 95% Student-t interval over the seeds), and the
difference SAM - SGD of the accuracy, paired by seed (both see the same noisy labels).
Each run's workdir is --out/runs/NOISE_OPTIMIZER_sSEED; a run that finished (results.json)
is not trained again, so an interrupted reproduction (Ctrl-C) continues where it stopped:
an unfinished run resumes from its last checkpoint.
"""

import json
import os
import signal
import subprocess
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


def command(run: dict, workdir: str, epochs: int | None, data_dir: str | None) -> list[str]:
  """The training binary's command line for one run."""
  config = os.path.join(ROOT, "configs", "digits_label_noise.py")
  return ([
      sys.executable, "-m", "sam_jax.train", f"--workdir={workdir}",
      f"--config={config}:{run['noise']},{run['optimizer']}", f"--config.seed={run['seed']}"
  ] + ([f"--config.num_epochs={epochs}"] if epochs else []) +
          ([f"--config.data_dir={data_dir}"] if data_dir else []))


def finished(workdir: str) -> dict | None:
  path = os.path.join(workdir, "results.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def train_all(runs: list[dict], out: str, jobs: int, epochs: int | None,
              data_dir: str | None) -> tuple[list[dict], list[str]]:
  """Trains the runs that have no results.json yet, `jobs` at a time, each in its own
  `python -m sam_jax.train` (its log in WORKDIR/train.log); returns (done, failures).

  On Ctrl-C the trainings stop too, keeping their checkpoints, before KeyboardInterrupt
  goes on.
  """
  started, done, failures, pending, running = time.monotonic(), [], [], [], {}
  for run in runs:
    workdir = os.path.join(out, "runs", run["name"])
    results = finished(workdir)
    if results:
      done.append({**run, **results})
    else:
      pending.append((run, workdir))
  try:
    while pending or running:
      while pending and len(running) < jobs:
        run, workdir = pending.pop(0)
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "train.log"), "a") as log:
          process = subprocess.Popen(
              command(run, workdir, epochs, data_dir), cwd=ROOT, stdout=log,
              stderr=subprocess.STDOUT)
        running[process] = (run, workdir)
      time.sleep(1)
      for process in [p for p in running if p.poll() is not None]:
        run, workdir = running.pop(process)
        results = finished(workdir) if process.returncode == 0 else None
        if results is None:
          failures.append(f"{run['name']} failed (exit status {process.returncode}): see "
                          f"{os.path.join(workdir, 'train.log')}")
          print(failures[-1], flush=True)
          continue
        done.append({**run, **results})
        print(
            f"[{len(done)}/{len(runs)} {time.monotonic() - started:.0f} s] {run['name']}: "
            f"test accuracy {100 - 100 * results['test_error']:.1f}%, training error on "
            f"the noisy labels {100 * results['train_eval_error']:.1f}%", flush=True)
  except KeyboardInterrupt:
    for process in running:  # a terminal's Ctrl-C reached them already; a kill -INT not
      if process.poll() is None:
        process.send_signal(signal.SIGINT)
    for process in running:
      process.wait()
    raise
  return done, failures


def table(runs: list[dict]) -> str:
  """results.md's table: accuracy and noisy-label training error per cell, SAM - SGD."""
  lines = [
      "| noise % | SGD test accuracy | SAM test accuracy | SAM - SGD (paired) "
      "| SGD train error on noisy labels | SAM train error on noisy labels |",
      "| --- | --- | --- | --- | --- | --- |"
  ]
  for noise in sorted({r["noise"] for r in runs}):
    by_seed = {
        o: {
            r["seed"]: r for r in runs if (r["noise"], r["optimizer"]) == (noise, o)
        } for o in ("sgd", "sam")
    }
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
  runs = [{
      "noise": int(noise),
      "optimizer": optimizer,
      "seed": int(seed),
      "name": f"{noise}_{optimizer}_s{seed}"
  } for seed in FLAGS.seeds for noise in FLAGS.noise for optimizer in ("sgd", "sam")]
  started = time.monotonic()
  try:
    done, failures = train_all(runs, out, FLAGS.jobs, FLAGS.epochs, FLAGS.data_dir)
  except KeyboardInterrupt:
    sys.exit("Interrupted; the same command continues where this one stopped.")
  if failures:
    sys.exit(f"{len(failures)} of {len(runs)} runs failed:\n" + "\n".join(failures))
  minutes = (time.monotonic() - started) / 60
  epochs = {round(r["epochs"]) for r in done}
  invocation = "python scripts/reproduce_label_noise.py " + " ".join(sys.argv[1:])
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"`{invocation.strip()}` ({minutes:.1f} minutes with --jobs={FLAGS.jobs}; "
            f"{', '.join(map(str, sorted(epochs)))} epochs; seeds "
            f"{', '.join(FLAGS.seeds)}; mean ± 95% interval over the seeds)\n\n")
    f.write(table(done))
  with open(os.path.join(out, "runs.json"), "w") as f:
    json.dump(sorted(done, key=lambda r: r["name"]), f, indent=2)
  print(open(os.path.join(out, "results.md")).read())


if __name__ == "__main__":
  define_flags()
  app.run(main)
