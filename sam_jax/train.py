"""Training binary: a config file (plus overrides or the original SAM flags) in, a run out.

    python -m sam_jax.train --config=configs/digits_demo.py --workdir=workdirs/demo
    python -m sam_jax.train --config=configs/default.py --config.sam.rho=0.1 --workdir=...

The original google-research/sam flags are accepted too and land in the same config
(`sam_jax/original_flags.py`); without --config they start from `configs/original.py`,
the official binary's defaults, and train what the official command trained:

    python -m sam_jax.train --dataset cifar10 --model_name WideResnet28x10 \\
        --output_dir DIR --image_level_augmentations autoaugment --num_epochs 1800 --sam_rho 0.05

Bad input (flags, config, data, layout, checkpoint) ends the run with one line and exit
status 2; anything else is a bug or a failing machine and keeps its traceback.
"""

import copy
import importlib.metadata
import os
import sys
from typing import NoReturn

from absl import flags, logging
from ml_collections import config_flags

import sam_jax
from sam_jax import config_files, console, original_flags, validation, xla_cpu
from sam_jax import run_files
from sam_jax.errors import Stopped, UsageError, exit_with_usage_error, run_binary

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _config_path(name: str) -> str:
  """The checkout's configs/NAME, else the copy an installed wheel carries."""
  checkout = os.path.join(os.path.dirname(_PACKAGE), "configs", name)
  if os.path.isfile(checkout):
    return checkout
  return os.path.join(_PACKAGE, "experiments", "configs", name)


_DEFAULT_CONFIG = _config_path("default.py")
_ORIGINAL_CONFIG = _config_path("original.py")  # the official binary's defaults


def _fail(reason: str) -> NoReturn:
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


_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for checkpoints, TensorBoard events and results.json; a run "
    "restarted with the same workdir resumes from its latest checkpoint.")
# Several processes (docs/guides/processes.md): JAX detects Cloud TPU, SLURM, Open MPI and
# Kubernetes by itself; elsewhere every process gets these three.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordination service, when "
    "launching several processes by hand (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "How many processes the run has.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to "
                                   "num_processes - 1.")
_STARTUP = flags.DEFINE_integer(
    "startup_timeout_seconds", 300, "With several processes: how long each waits for the "
    "others to join before it gives up with one line.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", 100, "With several processes: the others stop this long "
    "after one of them died.")
_ALLOW_CHANGES = flags.DEFINE_bool(
    "allow_config_changes", False, "Resume a workdir with a config that computes something "
    "else than the one its checkpoints were trained with (the changes are recorded in "
    "WORKDIR/config_changes.json; config.json keeps the original).")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show every library's INFO lines too (Orbax, TFDS, JAX, clu, "
    "TensorFlow's start-up), not only sam_jax's lines and everyone's warnings.")
_VERSION = flags.DEFINE_bool("version", False,
                             "Print the versions of sam-jax and of JAX, Flax and Optax, and exit.")
_DEFINE = {
    str: flags.DEFINE_string,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_bool,
    list: flags.DEFINE_list
}
for _name, _flag in original_flags.ORIGINAL_FLAGS.items():
  _DEFINE[_flag.type](_name, None, f"[original flag] {_flag.help}")

_CONFIG = None  # the --config flag: defined by parse_flags, from the config file it names
_OVERRIDDEN: set[str] = set()  # the fields its --config.FIELD flags set
_CONFIG_HELP = ("Experiment config file, configs/NAME.py or configs/NAME.py:ARGUMENT. Its "
                "fields, each settable with --config.FIELD=VALUE (default: this config "
                "file's value):")


def _config_spec(argv: list[str]) -> tuple[str, list[str]]:
  """The --config=FILE[:ARGUMENT] of `argv`, and `argv` without it: the flag that absl
  parses is the loaded ConfigDict, with its overrides. Without --config: configs/original.py
  if an original flag is given (the official command), else configs/default.py."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg[len("--config="):], argv[:i] + argv[i + 1:]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1], argv[:i] + argv[i + 2:]
  return (_ORIGINAL_CONFIG if any(map(_names_original_flag, argv)) else _DEFAULT_CONFIG), argv


def _joined_booleans(argv: list[str]) -> list[str]:
  """`--flag true` (or false) as `--flag=true` for the boolean original flags, the form of
  the official README's finetuning command: absl reads a boolean flag alone and would
  leave `true` behind as an argument."""
  joined: list[str] = []
  for arg in argv:
    name = joined[-1].lstrip("-") if joined and joined[-1].startswith("-") else ""
    flag = original_flags.ORIGINAL_FLAGS.get(name)
    if flag is not None and flag.type is bool and arg.lower() in ("true", "false"):
      joined[-1] += f"={arg}"
    else:
      joined.append(arg)
  return joined


def _names_original_flag(arg: str) -> bool:
  """Whether `arg` sets an original flag (-name, --name[=value], --noname for booleans)."""
  if not arg.startswith("-"):
    return False
  name = arg.lstrip("-").partition("=")[0]
  if name in original_flags.ORIGINAL_FLAGS:
    return True
  negated = original_flags.ORIGINAL_FLAGS.get(name.removeprefix("no"))
  return name.startswith("no") and negated is not None and negated.type is bool


def _define_config_flag(spec: str, argv: list[str]) -> None:
  """--config as the ConfigDict of `spec`, its help listing every field (--helpfull)."""
  for name in [name for name in flags.FLAGS if name.split(".")[0] == "config"]:
    delattr(flags.FLAGS, name)  # a second parse (tests): the previous config's flags
  _OVERRIDDEN.clear()
  _OVERRIDDEN.update(
      arg.lstrip("-").partition("=")[0][len("config."):]
      for arg in argv
      if arg.lstrip("-").startswith("config."))
  config = config_files.load(spec)
  described = config_files.describe(config, config_files.field_help(_DEFAULT_CONFIG))
  global _CONFIG  # pylint: disable=global-statement
  _CONFIG = config_flags.DEFINE_config_dict("config", config, f"{_CONFIG_HELP}\n\n{described}",
                                            lock_config=True, sys_argv=argv)
  flags.FLAGS["config"].default_as_str = repr(spec)  # not the whole config again


def config_from_flags():
  """The config file with --config.* overrides, then the original flags that were set.

  Raises:
    UsageError: for original flags that do not make sense together.
  """
  if _CONFIG is None:
    raise RuntimeError("config_from_flags() needs parse_flags() to define --config first.")
  config = copy.deepcopy(_CONFIG.value)  # the flag's own value stays as parsed
  original_flags.apply(config,
                       {name: flags.FLAGS[name].value for name in original_flags.ORIGINAL_FLAGS},
                       _OVERRIDDEN)
  return config


def workdir_from_flags() -> str:
  """--workdir, or the original --output_dir.

  Raises:
    UsageError: when neither is given, or both name different folders.
  """
  workdir, output_dir = _WORKDIR.value, flags.FLAGS.output_dir
  if workdir and output_dir and workdir != output_dir:
    raise UsageError(f"--workdir={workdir} and --output_dir={output_dir} name two places for "
                     "one run: give one of them (--output_dir is the original's --workdir).")
  if not (workdir or output_dir):
    raise UsageError("Say where the run lives: --workdir=DIR (or the original --output_dir).")
  return workdir or output_dir


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with any error (a config file's included) shown as one line."""
  try:
    spec, argv = _config_spec(_joined_booleans(argv))
    _define_config_flag(spec, argv)
    return flags.FLAGS(argv)
  except UsageError as e:  # a config file that is not there, or refuses its argument
    _fail(str(e))
  except (AttributeError, KeyError) as e:  # from ml_collections' override parsing
    _fail(_unknown_field(e))
  except flags.Error as e:  # a bad flag value
    _fail(f"{_last_line(e)} (see --helpfull)")


def version_line() -> str:
  """sam-jax's version (pyproject.toml's, from the package metadata) and its stack's."""
  stack = ", ".join(
      f"{name} {importlib.metadata.version(name)}" for name in ("jax", "jaxlib", "flax", "optax"))
  return f"sam-jax {sam_jax.__version__} ({stack})"


def main(argv):
  if _VERSION.value:
    print(version_line(), flush=True)
    return
  xla_cpu.set_defaults()  # before JAX starts its CPU backend
  try:
    if len(argv) > 1:
      raise UsageError(f"Unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                       "--name=value; a config file is --config=FILE).")
    config, workdir = config_from_flags(), workdir_from_flags()
    console.quiet_logs(_VERBOSE.value)
    validation.check(config)
    if (results := run_files.finished_results(config, workdir)) is not None:
      print(
          f"sam_jax.train: {workdir} has finished ({results['steps']} steps): "
          f"{_shown(results)}; nothing to do (results.json; another --workdir starts a "
          "new run).", file=sys.stderr, flush=True)
      return
    if changed := run_files.check_resume(config, workdir, _ALLOW_CHANGES.value):
      logging.warning("Resuming %s with changes: %s (recorded in %s).", workdir,
                      run_files.describe(changed), run_files.CHANGES)
    with console.native_noise_filtered(_VERBOSE.value):
      # pylint: disable-next=import-outside-toplevel  (JAX, TF: after the checks)
      from sam_jax import loop, processes
    processes.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         _HEARTBEAT.value, _STARTUP.value)
    processes.check_backend()
    final = loop.train_and_evaluate(config, workdir)
  except UsageError as e:
    _fail(str(e))
  except Stopped as e:  # SIGTERM or Ctrl-C: saved, and not an error (exit status 0)
    print(f"sam_jax.train: {e}", file=sys.stderr, flush=True)
    return
  logging.info("Finished: %s (in %s).", _shown(final), workdir_from_flags())


def _shown(results: dict) -> str:
  """The results worth a line: test (and raw/EMA) loss and error, steps, epochs."""
  return ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                   for name, value in results.items()
                   if name.endswith(("_loss", "_error")) or name in ("steps", "epochs"))


if __name__ == "__main__":
  run_binary("sam_jax.train", main, flags_parser=parse_flags)
