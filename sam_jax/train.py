"""Training binary: a config file (plus overrides or the original SAM flags) in, a run out.

    python -m sam_jax.train --config=configs/digits_demo.py --workdir=workdirs/demo
    python -m sam_jax.train --config=configs/default.py --config.sam.rho=0.1 --workdir=...

The original google-research/sam flags are accepted too and land in the same config
(`sam_jax/original_flags.py`):

    python -m sam_jax.train --dataset cifar10 --model_name WideResnet28x10 \\
        --output_dir DIR --image_level_augmentations autoaugment --num_epochs 1800 --sam_rho 0.05

Bad input (flags, config, data, layout, checkpoint) ends the run with one line and exit
status 2; anything else is a bug or a failing machine and keeps its traceback.
"""

import copy
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from sam_jax import original_flags
from sam_jax.errors import Stopped, UsageError, exit_with_usage_error

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_ROOT, "configs", "default.py")


def _fail(reason: str):
  exit_with_usage_error("sam_jax.train", reason)


def _last_line(error: Exception) -> str:
  """The informative line of a (possibly multi-line) error message."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def _unknown_field(error: Exception) -> str:
  """One line from ml_collections' KeyError (possibly inside an AttributeError): the field
  and ml_collections' suggestion, if it has one."""
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  field, *suggestion = str(error.args[0] if error.args else error).splitlines()
  field = field.strip("'\"")
  hint = f" {suggestion[0].strip()}" if suggestion else ""
  return (f"a --config.FIELD override names a field the config does not have: '{field}'."
          f"{hint} (python -m sam_jax.train --helpfull lists the fields).")


try:  # ml_collections applies --config.FIELD overrides from sys.argv right here
  _CONFIG = config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Experiment config file (configs/*.py, optionally "
      "path.py:ARGUMENT); fields can be overridden with --config.FIELD=VALUE.",
      lock_config=True)
except (AttributeError, KeyError) as e:
  _fail(_unknown_field(e))
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for checkpoints, TensorBoard events and results.json; a run "
    "restarted with the same workdir resumes from its latest checkpoint.")
# Several processes (README, "Many processes"): JAX detects Cloud TPU, SLURM, Open MPI and
# Kubernetes by itself; elsewhere every process gets these three.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordination service, when "
    "launching several processes by hand (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "How many processes the run has.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to "
                                   "num_processes - 1.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", 100, "With several processes: the others stop this long "
    "after one of them died.")
_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool, list: flags.DEFINE_list}
for _name, _flag in original_flags.ORIGINAL_FLAGS.items():
  _DEFINE[_flag.type](_name, None, f"[original flag] {_flag.help}")


def config_from_flags():
  """The config file with --config.* overrides, then the original flags that were set.

  Raises:
    UsageError: for a config file that could not be loaded, or original flags that do
      not make sense together.
  """
  try:
    config = copy.deepcopy(_CONFIG.value)  # the flag's own value stays as parsed
  except OSError as e:  # ml_collections reports a config file it could not load only here
    raise UsageError(f"{_last_line(e)} (see --helpfull)") from e
  original_flags.apply(config, {name: flags.FLAGS[name].value
                                for name in original_flags.ORIGINAL_FLAGS})
  return config


def workdir_from_flags() -> str:
  workdir = _WORKDIR.value or flags.FLAGS.output_dir
  if not workdir:
    raise UsageError("Say where the run lives: --workdir=DIR (or the original --output_dir).")
  return workdir


def _configs_importable(argv: list[str]) -> None:
  """Config files import their siblings as `configs.NAME` (`from configs import default`):
  put the folder that holds the config's folder first on the path, from any directory."""
  for i, arg in enumerate(argv):
    path = arg[len("--config="):] if arg.startswith("--config=") else (
        argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
    if path:
      sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path.split(":")[0]))))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with any error (a config file's included) shown as one line."""
  _configs_importable(argv)
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # from ml_collections' override parsing
    _fail(_unknown_field(e))
  except (flags.Error, OSError) as e:  # a bad flag value, a config file refusing its argument
    _fail(f"{_last_line(e)} (see --helpfull)")


def main(argv):
  try:
    if len(argv) > 1:
      raise UsageError(f"Unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                       "--name=value; a config file is --config=FILE).")
    config, workdir = config_from_flags(), workdir_from_flags()
    # pylint: disable-next=import-outside-toplevel  (JAX, TF: after the flags)
    from sam_jax import loop, processes
    processes.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         _HEARTBEAT.value)
    results = loop.train_and_evaluate(config, workdir)
  except UsageError as e:
    _fail(str(e))
  except Stopped as e:  # SIGTERM or Ctrl-C: saved, and not an error (exit status 0)
    print(f"sam_jax.train: {e}", file=sys.stderr, flush=True)
    return
  logging.info("Results: %s", results)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
