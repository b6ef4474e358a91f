"""The analysis binary: a training workdir's checkpoint in, sharpness numbers and plots out.

    python -m sam_jax.analysis --workdir=workdirs/digits_demo

reads the run's config.json and latest checkpoint, rebuilds its model and training set
(the labels it was trained on, label noise included; no augmentation), and writes to
WORKDIR/analysis/ (or --out):

- training_curves.png: train and test loss, train and test error and the learning rate
  against step, from the run's TensorBoard scalars (written first, as the analyses take
  minutes; skipped with a warning when the workdir has no such scalars);
- analysis.json: training loss and error, the Hessian's top eigenvalues (Lanczos),
  lambda_max / lambda_k, the Hutchinson trace, the SLQ spectral density, and the
  m-sharpness for each --m;
- hessian_spectrum.png: the density on a log scale with lambda_max marked (Fig. 3 left);
- m_sharpness.png: m-sharpness against m, measured at --rho (the title's rho; the legend's
  is the rho the run was trained with).
"""

import os

from absl import flags, logging

from sam_jax import console, xla_cpu
from sam_jax.errors import UsageError, exit_with_usage_error, run_binary

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
_POWER = flags.DEFINE_integer(
    "power_iterations", 0, "Also run power iteration with deflation "
    "for the top-k, with at most this many steps each (0: no).")
_M = flags.DEFINE_list("m", ["1", "4", "16", "64", "256"], "m values of the m-sharpness "
                       "(empty: none).")
_RHO = flags.DEFINE_float(
    "rho", None, "Radius of the m-sharpness (default: the run's "
    "sam.rho, or 0.05 for a run without SAM).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random Lanczos and probe vectors.")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show every library's INFO lines too, not only "
    "sam_jax's lines and everyone's warnings.")


def m_values() -> list[int]:
  """The --m list as positive integers."""
  if not all(m.isdigit() and int(m) > 0 for m in _M.value):
    raise UsageError(f"--m takes positive integers, e.g. --m=1,4,16, not {','.join(_M.value)}.")
  return [int(m) for m in _M.value]


def main(argv):
  xla_cpu.set_defaults()  # before JAX starts its CPU backend
  workdir = _WORKDIR.value
  try:
    if len(argv) > 1:
      raise UsageError(f"Unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                       "--name=value).")
    if not workdir:
      raise UsageError("Say which run to analyse: --workdir=DIR (a python -m sam_jax.train "
                       "workdir).")
    ms = m_values()
    console.quiet_logs(_VERBOSE.value)
    with console.native_noise_filtered(_VERBOSE.value):
      # pylint: disable-next=import-outside-toplevel  (JAX, TF: after the flags)
      from sam_jax.analysis import plots, report as analysis
      from sam_jax import processes
    processes.check_backend()
    config, info, model, variables, step = analysis.load_run(workdir, _STEP.value, _USE_EMA.value)
    out = _OUT.value or os.path.join(workdir, "analysis")
    analysis.write_training_curves(
        workdir, out, f"{config.model_name} on {config.dataset}, "
        f"{plots.trained_with(config.sam.rho)}")
    examples = analysis.training_examples(config, info, model, _NUM_EXAMPLES.value)
    logging.info("Analysing %s at step %d (%s on %s) over %d training examples, into %s.", workdir,
                 step, config.model_name, config.dataset, len(examples["label"]), out)
    rho = _RHO.value if _RHO.value is not None else (config.sam.rho or 0.05)
    report, density = analysis.analyze(
        model, variables, examples, m_values=ms, rho=rho, batch_size=_BATCH_SIZE.value,
        train_batch_norm=_BATCH_NORM.value == "train", top_k=_TOP_K.value,
        lanczos_steps=_LANCZOS_STEPS.value, slq_vectors=_SLQ_VECTORS.value,
        hutchinson_probes=_PROBES.value, power_iterations=_POWER.value, seed=_SEED.value,
        loss_kind=config.loss)
  except UsageError as e:
    exit_with_usage_error("sam_jax.analysis", str(e))
  report = {**analysis.describe_run(workdir, config, step), **report}
  analysis.write(report, density, out, config.model_name)
  hessian_report = report.get("hessian", {})
  logging.info("Wrote %s: lambda_max %s, m-sharpness %s.", out, hessian_report.get("lambda_max"),
               report.get("m_sharpness", {}).get("values"))


if __name__ == "__main__":
  run_binary("sam_jax.analysis", main)
