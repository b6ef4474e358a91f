"""Small-scale reproduction of the SAM paper's sharpness results on the offline digits.

    source scripts/setup_env.sh
    python scripts/reproduce_digits.py --out=workdirs/digits_reproduction

Trains every cell of `configs/digits_sharpness.py` over several seeds (SGD and SAM on
clean labels and on 20/40/60/80% symmetric label noise; SAM with other m on clean
labels), analyses each final model with `sam_jax.analysis` (Hessian top eigenvalues by
Lanczos over the whole training set, m-sharpness), and writes to --out:

- results.md: the tables (mean and 95% Student-t interval over the seeds per cell,
  and Kendall's tau between each m-sharpness and the generalisation gap);
- runs.json: every run's numbers; runs/NAME_sSEED/: each run's workdir and analysis;
- hessian_spectrum.png, m_sharpness.png, label_noise.png.

A run whose workdir already has its analysis is not trained again, so an interrupted
reproduction continues where it stopped. --jobs runs that many trainings side by side.
"""

import concurrent.futures
import json
import math
import multiprocessing
import os
import sys
import time

from absl import app, flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sam_jax.analysis.intervals import cell, interval  # noqa: E402  (after the path)

_OUT = flags.DEFINE_string("out", "workdirs/digits_reproduction", "Output folder.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every cell.")
_NOISE = flags.DEFINE_list("noise", ["0", "20", "40", "60", "80"], "Label noise levels (%).")
_M_SWEEP = flags.DEFINE_list("m_sweep", ["4", "128"], "Other m for SAM on clean labels (the "
                             "default cells use m = 16).")
_SHARPNESS_M = flags.DEFINE_list("sharpness_m", ["1", "4", "16", "64"],
                                 "m values of the measured m-sharpness.")
_LANCZOS_STEPS = flags.DEFINE_integer("lanczos_steps", 20, "Lanczos steps of the Hessian.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override the config's epochs (quick checks).")
_JOBS = flags.DEFINE_integer("jobs", 2, "Runs trained side by side (processes).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's).")
_MEASURED_RHO = 0.05  # the radius of every run's m-sharpness, whatever rho it was trained with


def run_list(seeds, noise_levels, m_sweep) -> list[dict]:
  """Every (cell, seed) of the reproduction: the label-noise grid, then the m sweep."""
  runs = []
  for seed in seeds:
    for noise in noise_levels:
      runs += [{"cell": f"{noise},{opt}", "seed": seed} for opt in ("sgd", "sam")]
    runs += [{"cell": f"0,sam,{m}", "seed": seed} for m in m_sweep]
  for run in runs:
    run["name"] = f"{run['cell'].replace(',', '_')}_s{run['seed']}"
  return runs


def train_and_analyse(run: dict, out: str, sharpness_m: list[int], lanczos_steps: int,
                      epochs: int | None = None, data_dir: str | None = None) -> dict:
  """Trains one run (resuming its workdir) and analyses it; returns its numbers.

  `run`: its "cell" of `configs/digits_sharpness.py` (or of the config module named by
  "config"), its "seed" and its "name" (the workdir's)."""
  # In the spawned workers only: the parent needs neither JAX nor TensorFlow.
  import importlib  # pylint: disable=import-outside-toplevel
  from sam_jax import loop, xla_cpu  # pylint: disable=import-outside-toplevel
  from sam_jax.analysis import report  # pylint: disable=import-outside-toplevel

  xla_cpu.set_defaults()  # as the training binary

  workdir = os.path.join(out, "runs", run["name"])
  analysis_path = os.path.join(workdir, "analysis", "analysis.json")
  if not os.path.exists(analysis_path):
    configs = importlib.import_module(f"configs.{run.get('config', 'digits_sharpness')}")
    config = configs.get_config(run["cell"])
    config.seed = run["seed"]
    config.data_dir = data_dir
    if epochs:
      config.num_epochs = epochs
    started = time.monotonic()
    loop.train_and_evaluate(config, workdir)
    train_seconds = time.monotonic() - started
    config, info, model, variables, step = report.load_run(workdir)
    examples = report.training_examples(config, info, model)
    numbers, _ = report.analyze(model, variables, examples, m_values=sharpness_m, rho=_MEASURED_RHO,
                                top_k=5, lanczos_steps=lanczos_steps, slq_vectors=1,
                                hutchinson_probes=0, loss_kind=config.loss)
    numbers = {
        **report.describe_run(workdir, config, step),
        **numbers, "seconds": {
            "train": train_seconds,
            "analysis": time.monotonic() - started - train_seconds
        }
    }
    report.write(numbers, None, os.path.dirname(analysis_path), run["name"])
  with open(analysis_path) as f:
    return summarise_run(run, json.load(f))


def summarise_run(run: dict, analysis: dict) -> dict:
  """The numbers the tables use, from one run's analysis.json."""
  noise, optimizer, *rest = run["cell"].split(",")
  m = [part for part in rest if part.isdigit()]  # not variant=NAME (compare_variants.py)
  top = analysis["hessian"]["top_eigenvalues"]
  return {
      **run,
      "noise": int(noise),
      "optimizer": optimizer,
      "m": int(m[0]) if m else analysis["trained_with"]["m"],
      "rho": analysis["trained_with"]["rho"],
      "test_error": analysis["results"]["test_error"],
      "train_error": analysis["train_error"],  # on the (noisy) labels it was trained on
      "gap": analysis["results"]["test_error"] - analysis["train_error"],
      "lambda_max": top[0],
      "lambda_max/lambda_5": top[0] / top[-1],
      "m_sharpness": {
          int(m): v for m, v in analysis["m_sharpness"]["values"].items()
      },
      "density": analysis["hessian"]["density"],
      "seconds": analysis.get("seconds"),
  }


def select(runs, **where):
  return [r for r in runs if all(r[k] == v for k, v in where.items())]


def m_sweep_table(clean: list[dict], ms: list[int]) -> list[str]:
  """Rows of the clean-label runs: SGD, then SAM for each m it was trained with."""
  lines = [
      "", "**m sweep** (clean labels; SGD is rho = 0; m-sharpness measured at rho = "
      f"{_MEASURED_RHO} over the training set):", "",
      "| run | test error % | lambda_max | " + " | ".join(f"{m}-sharpness" for m in ms) + " |",
      "| --- | --- | --- | " + " | ".join("---" for _ in ms) + " |"
  ]
  groups = [("SGD", select(clean, optimizer="sgd"))
           ] + [(f"SAM m = {m}", select(clean, optimizer="sam", m=m))
                for m in sorted({r["m"] for r in clean if r["optimizer"] == "sam"})]
  for label, group in groups:
    lines.append(f"| {label} | {cell([r['test_error'] for r in group], 100)} "
                 f"| {cell([r['lambda_max'] for r in group])} | " +
                 " | ".join(cell([r['m_sharpness'][m] for r in group], 1, 4) for m in ms) + " |")
  return lines


def tables(runs: list[dict]) -> str:
  """The markdown tables of results.md."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  seeds = sorted({r["seed"] for r in runs})
  lines = [
      f"Seeds {', '.join(map(str, seeds))}; mean ± 95% interval (Student t) over them.", "",
      "**Label noise** (test accuracy % on the clean test digits; training error % on "
      "the noisy labels it was trained on; Hessian lambda_max of the training loss):", "",
      "| noise % | SGD accuracy | SAM accuracy | SGD train error | SAM train error "
      "| SGD lambda_max | SAM lambda_max | SGD lambda_max/lambda_5 | SAM lambda_max/lambda_5 |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  ]
  for noise in sorted({r["noise"] for r in runs}):
    sgd, sam = (select(runs, noise=noise, optimizer=o, m=16) for o in ("sgd", "sam"))
    if sgd and sam:
      lines.append(
          f"| {noise} | {cell([100 - 100 * r['test_error'] for r in sgd])} "
          f"| {cell([100 - 100 * r['test_error'] for r in sam])} "
          f"| {cell([r['train_error'] for r in sgd], 100)} "
          f"| {cell([r['train_error'] for r in sam], 100)} "
          f"| {cell([r['lambda_max'] for r in sgd])} | {cell([r['lambda_max'] for r in sam])} "
          f"| {cell([r['lambda_max/lambda_5'] for r in sgd])} "
          f"| {cell([r['lambda_max/lambda_5'] for r in sam])} |")
  clean = select(runs, noise=0)
  ms = sorted(next(iter(runs))["m_sharpness"])
  if clean:
    lines += m_sweep_table(clean, ms)
  gaps = [r["gap"] for r in runs]
  # scipy builds its result class at runtime: pyright cannot see its `statistic`.
  tau = lambda x: stats.kendalltau(x, gaps).statistic  # pyright: ignore[reportAttributeAccessIssue]
  taus = {m: tau([r["m_sharpness"][m] for r in runs]) for m in ms}
  tau_lambda = tau([r["lambda_max"] for r in runs])
  lines += [
      "", f"**Does sharpness predict the generalisation gap?** Kendall's tau between "
      f"each measure and test error minus training error, over all {len(runs)} runs:", "",
      "| measure | " + " | ".join(f"{m}-sharpness" for m in ms) + " | lambda_max |",
      "| --- | " + " | ".join("---" for _ in ms) + " | --- |",
      "| tau | " + " | ".join(f"{taus[m]:.2f}" for m in ms) + f" | {tau_lambda:.2f} |"
  ]
  return "\n".join(lines) + "\n"


def figures(runs: list[dict], out: str) -> None:
  """hessian_spectrum.png (SGD vs SAM at the lowest noise, first seed), m_sharpness.png
  (the same runs over the seeds), label_noise.png (accuracy against noise)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from sam_jax.analysis import plots  # pylint: disable=import-outside-toplevel
  seed = min(r["seed"] for r in runs)
  noise = min(r["noise"] for r in runs)
  labels = "clean digits" if noise == 0 else f"digits with {noise}% label noise"
  spectra = {}
  for optimizer in ("sgd", "sam"):
    for r in select(runs, noise=noise, optimizer=optimizer, m=16, seed=seed):
      spectra[plots.trained_with(r["rho"])] = (np.asarray(r["density"]["grid"]),
                                               np.asarray(r["density"]["density"]), r["lambda_max"])
  if spectra:
    plots.spectral_densities(spectra, os.path.join(out, "hessian_spectrum.png"),
                             f"Hessian of the training loss, {labels}, seed {seed}")
  curves = {}
  for optimizer in ("sgd", "sam"):
    group = select(runs, noise=noise, optimizer=optimizer, m=16)
    if group:
      ms = sorted(group[0]["m_sharpness"])
      stats_ = [interval([r["m_sharpness"][m] for r in group]) for m in ms]
      curves[plots.trained_with(group[0]["rho"])] = (ms, [s[0] for s in stats_], [
          0 if math.isnan(s[1]) else s[1] for s in stats_
      ])
  if curves:
    plots.m_sharpness(curves, os.path.join(out, "m_sharpness.png"), _MEASURED_RHO,
                      f"{labels}, mean and 95% interval over the seeds")
  figure = Figure(figsize=(6, 4))
  axes = figure.subplots()
  for optimizer in ("sgd", "sam"):
    levels = sorted({r["noise"] for r in select(runs, optimizer=optimizer, m=16)})
    stats_ = [
        interval(
            [100 - 100 * r["test_error"]
             for r in select(runs, noise=n, optimizer=optimizer, m=16)])
        for n in levels
    ]
    axes.errorbar(levels, [s[0] for s in stats_], capsize=3, marker="o", label=optimizer.upper(),
                  yerr=[0 if math.isnan(s[1]) else s[1] for s in stats_])
  axes.set_xlabel("label noise %")
  axes.set_ylabel("clean test accuracy %")
  axes.legend()
  figure.tight_layout()
  figure.savefig(os.path.join(out, "label_noise.png"), dpi=120)


def train_all(runs: list[dict], args: tuple, jobs: int) -> list[dict]:
  """`train_and_analyse(run, *args)` for every run, `jobs` at a time in fresh processes,
  printing each as it ends: their numbers, with each run's own fields."""
  started, done = time.monotonic(), []
  context = multiprocessing.get_context("spawn")  # fresh JAX and TF in every worker
  with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
    futures = {pool.submit(train_and_analyse, run, *args): run for run in runs}
    for future in concurrent.futures.as_completed(futures):
      result = {**futures[future], **future.result()}
      done.append(result)
      print(
          f"[{len(done)}/{len(runs)} {time.monotonic() - started:.0f} s] {result['name']}: "
          f"test error {100 * result['test_error']:.2f}%, lambda_max {result['lambda_max']:.3g}",
          flush=True)
  return done


def main(argv):
  del argv
  out = os.path.abspath(_OUT.value)
  runs = run_list([int(s) for s in _SEEDS.value], _NOISE.value, [int(m) for m in _M_SWEEP.value])
  args = (out, [int(m) for m in _SHARPNESS_M.value], _LANCZOS_STEPS.value, _EPOCHS.value,
          _DATA_DIR.value)
  started = time.monotonic()
  done = train_all(runs, args, _JOBS.value)
  done.sort(key=lambda r: [r2["name"] for r2 in runs].index(r["name"]))
  minutes = (time.monotonic() - started) / 60
  with open(os.path.join(out, "runs.json"), "w") as f:
    json.dump([{k: v for k, v in r.items() if k != "density"} for r in done], f, indent=2)
  command = "python scripts/reproduce_digits.py " + " ".join(sys.argv[1:])
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"`{command.strip()}` ({minutes:.1f} minutes with --jobs={_JOBS.value})\n\n")
    f.write(tables(done))
  figures(done, out)
  print(open(os.path.join(out, "results.md")).read())


if __name__ == "__main__":
  app.run(main)
