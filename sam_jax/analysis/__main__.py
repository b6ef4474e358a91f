"""The analysis binary: a training workdir's checkpoint in, sharpness numbers and plots out.

    python -m sam_jax.analysis --workdir=workdirs/digits_demo

reads the run's config.json and latest checkpoint, rebuilds its model and training set
(the labels it was trained on, label noise included; no augmentation), and writes to
WORKDIR/analysis/ (or --out):

- analysis.json: training loss and error, the Hessian's top eigenvalues (Lanczos),
  lambda_max / lambda_k, the Hutchinson trace, the SLQ spectral density, and the
  m-sharpness for each --m;
- hessian_spectrum.png: the density on a log scale with lambda_max marked (Fig. 3 left);
- m_sharpness.png: m-sharpness against m.
"""

import os

from absl import app, flags, logging

from sam_jax.analysis import report as analysis
from sam_jax.errors import UsageError, exit_with_usage_error

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (config.json + checkpoints/).")
_OUT = flags.DEFINE_string("out", None, "Where to write the results (default WORKDIR/analysis).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to analyse (default: the latest).")
_USE_EMA = flags.DEFINE_bool("use_ema", False, "Analyse the run's EMA parameters.")
_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", 0, "Training examples to use (the first N; 0 = the whole training split).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Examples per device pass.")
_BATCH_NORM = flags.DEFINE_enum(
    "batch_norm", "eval", ["eval", "train"], "BatchNorm with the checkpoint's running "
    "statistics (eval) or with each batch's, as in training (train; also turns dropout and "
    "shake on, with fixed draws).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Top Hessian eigenvalues to report.")
_LANCZOS_STEPS = flags.DEFINE_integer("lanczos_steps", 40, "Lanczos steps per vector.")
_SLQ_VECTORS = flags.DEFINE_integer("slq_vectors", 2, "Random vectors of the SLQ density "
                                    "(0 skips the Hessian).")
_PROBES = flags.DEFINE_integer("hutchinson_probes", 20, "Probes of the trace estimate (0: none).")
_POWER = flags.DEFINE_integer("power_iterations", 0, "Also run power iteration with deflation "
                              "for the top-k, with at most this many steps each (0: no).")
_M = flags.DEFINE_list("m", ["1", "4", "16", "64", "256"], "m values of the m-sharpness "
                       "(empty: none).")
_RHO = flags.DEFINE_float("rho", None, "Radius of the m-sharpness (default: the run's "
                          "sam.rho, or 0.05 for a run without SAM).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random Lanczos and probe vectors.")


def m_values() -> list[int]:
  """The --m list as positive integers."""
  if not all(m.isdigit() and int(m) > 0 for m in _M.value):
    raise UsageError(f"--m takes positive integers, e.g. --m=1,4,16, not {','.join(_M.value)}.")
  return [int(m) for m in _M.value]


def main(argv):
  workdir = _WORKDIR.value
  try:
    if len(argv) > 1:
      raise UsageError(f"Unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                       "--name=value).")
    if not workdir:
      raise UsageError("Say which run to analyse: --workdir=DIR (a python -m sam_jax.train "
                       "workdir).")
    config, info, model, variables, step = analysis.load_run(workdir, _STEP.value, _USE_EMA.value)
    examples = analysis.training_examples(config, info, model, _NUM_EXAMPLES.value)
    rho = _RHO.value if _RHO.value is not None else (config.sam.rho or 0.05)
    report, density = analysis.analyze(
        model, variables, examples, m_values=m_values(), rho=rho,
        batch_size=_BATCH_SIZE.value, train_batch_norm=_BATCH_NORM.value == "train",
        top_k=_TOP_K.value, lanczos_steps=_LANCZOS_STEPS.value, slq_vectors=_SLQ_VECTORS.value,
        hutchinson_probes=_PROBES.value, power_iterations=_POWER.value, seed=_SEED.value)
  except UsageError as e:
    exit_with_usage_error("sam_jax.analysis", str(e))
  report = {**analysis.describe_run(workdir, config, step), **report}
  out = _OUT.value or os.path.join(workdir, "analysis")
  analysis.write(report, density, out, f"{config.model_name}, rho = {config.sam.rho}")
  hessian_report = report.get("hessian", {})
  logging.info("Wrote %s: lambda_max %s, m-sharpness %s.", out,
               hessian_report.get("lambda_max"), report.get("m_sharpness", {}).get("values"))


if __name__ == "__main__":
  app.run(main)
