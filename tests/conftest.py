"""Test set-up: 8 virtual CPU devices, private data folders, a persistent compilation cache,
and the helpers the tests share (the repository root, tiny configs, binaries in a subprocess).

Everything here is set in the environment before JAX, TensorFlow or TFDS is imported, so
that the subprocesses the tests start inherit it too.
"""

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRATCH = tempfile.mkdtemp(prefix="sam_jax_tests_")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)

# The tests' models are tiny: compiling is most of their cost, and LLVM's optimisations
# (-O2) take a third of it for nothing measurable at run time.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {FAST_COMPILE}"
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Datasets the tests prepare (the offline digits), Keras' and matplotlib's settings: in a
# temporary folder, never in the user's ~/tensorflow_datasets, ~/.keras or ~/.config.
os.environ["TFDS_DATA_DIR"] = os.path.join(_SCRATCH, "tensorflow_datasets")
os.environ["KERAS_HOME"] = os.path.join(_SCRATCH, "keras")
os.environ["MPLCONFIGDIR"] = os.path.join(_SCRATCH, "matplotlib")
# Compiled programs are kept in the checkout (git-ignored) and shared with the subprocesses.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

from sam_jax import xla_cpu  # noqa: E402

xla_cpu.set_defaults()  # the binaries' XLA:CPU options, as they run

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

from configs import smoke  # noqa: E402
from sam_jax import train  # noqa: E402


def pytest_collection_modifyitems(items):
  """The slow tests first: the workers then share out the quick ones at the end, and
  neither waits long on the other's last test."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def max_abs_diff(a, b) -> float:
  """Largest elementwise |a - b| over two pytrees of the same structure (any devices)."""
  diffs = jax.tree.map(lambda x, y: np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y))), a, b)
  return float(max(jax.tree.leaves(diffs)))


@pytest.fixture(scope="session")
def digits():
  """The offline digits, prepared once in the tests' TFDS folder: {"train", "test"} arrays."""
  from sam_jax.data import datasets, loading  # pylint: disable=import-outside-toplevel
  info = datasets.get_dataset_info("digits")
  return {split: loading.load_split(info, split, None) for split in ("train", "test")}


def tiny_config(**fields):
  """configs/smoke.py (a tiny WideResNet, two short epochs on the full schema of
  configs/default.py) with `fields` changed; nested ones merge: `sam=dict(rho=0.0)`."""
  config = smoke.get_config()
  config.update(fields)
  return config


def load_script(name: str):
  """scripts/NAME.py as a module (scripts/ on sys.path, for the modules it imports)."""
  scripts = os.path.join(ROOT, "scripts")
  if scripts not in sys.path:
    sys.path.append(scripts)
  spec = importlib.util.spec_from_file_location(name, os.path.join(scripts, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def parse_run(argv: list[str]):
  """(config, workdir) that the training binary makes of `argv`, without training.

  In-process, ml_collections knows only the --config.FIELD overrides of pytest's own
  command line: test those through the binary in a subprocess.
  """
  try:
    train.parse_flags(["train", *argv])
    return train.config_from_flags(), train.workdir_from_flags()
  finally:
    flags.FLAGS.unparse_flags()


def binary_env(devices: int = 1, fast_compile: bool = True) -> dict[str, str]:
  """The environment of a binary run by a test: this checkout, `devices` CPU devices, and
  XLA's fast compilation unless the binary computes more than it compiles (the analyses)."""
  flags = f"--xla_force_host_platform_device_count={devices}"
  return dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="",
              XLA_FLAGS=f"{FAST_COMPILE} {flags}" if fast_compile else flags)


def start_process(
    command: list,
    devices: int = 1,
    fast_compile: bool = True,
    env_overrides: dict[str, str] | None = None,
) -> subprocess.Popen:
  """`command` from the checkout in `binary_env` (with `env_overrides`), its output in
  files (a pipe could fill)."""
  out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
  env = {**binary_env(devices, fast_compile), **(env_overrides or {})}
  process = subprocess.Popen([str(part) for part in command], cwd=ROOT, env=env, stdout=out,
                             stderr=err, text=True)
  process.outputs = (out, err)
  return process


def start_binary(module: str, *args, **options) -> subprocess.Popen:
  """`python -m module args` (see `start_process`)."""
  return start_process([sys.executable, "-m", module, *args], **options)


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
  """Waits for a started process (killing it after `timeout`) and collects its output."""
  try:
    process.wait(timeout=timeout)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  out, err = process.outputs
  out.seek(0), err.seek(0)
  return subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())


def run_binary(module: str, *args, timeout: float = 300, **options) -> subprocess.CompletedProcess:
  """Runs `python -m module args` to the end: (returncode, stdout, stderr)."""
  return finish(start_binary(module, *args, **options), timeout)


def start_processes(count: int, devices: int, *args,
                    heartbeat_timeout_seconds: int = 10) -> list[subprocess.Popen]:
  """The training binary as `count` processes of `devices` CPU devices each, joined by
  JAX's distributed runtime on this machine (docs/guides/processes.md)."""
  with socket.socket() as s:  # a free port for process 0's coordination service
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  return [
      start_binary("sam_jax.train", *args, f"--coordinator_address=localhost:{port}",
                   f"--num_processes={count}", f"--process_id={i}",
                   f"--heartbeat_timeout_seconds={heartbeat_timeout_seconds}", devices=devices)
      for i in range(count)
  ]


def scalars(workdir, tag: str) -> dict[int, float]:
  """{step: value} of a TensorBoard scalar that a run wrote into `workdir`."""
  from sam_jax import events  # pylint: disable=import-outside-toplevel
  return events.read_scalars(workdir).get(tag, {})


def repeated_points(workdir) -> dict[tuple[str, int], int]:
  """{(tag, step): count} of the scalar points written more than once into `workdir`'s
  event files (all files together: what TensorBoard draws)."""
  import collections  # pylint: disable=import-outside-toplevel
  from tensorboard.compat.proto import event_pb2  # pylint: disable=import-outside-toplevel
  from sam_jax import events  # pylint: disable=import-outside-toplevel
  counts = collections.Counter((value.tag, event.step)
                               for path in events.event_files(workdir)
                               for event in map(event_pb2.Event.FromString, events.records(path))
                               for value in event.summary.value)
  return {point: count for point, count in counts.items() if count > 1}


def sigterm_at_call(monkeypatch, call: int) -> None:
  """Sends this process SIGTERM (a scheduler's preemption notice) from inside the loop, as
  it calls its `call`-th train step from now on (that is, during that step)."""
  from sam_jax import steps  # pylint: disable=import-outside-toplevel
  calls, make_train_step = [], steps.make_train_step

  def make_signalling_step(*args, **kwargs):
    train_step = make_train_step(*args, **kwargs)

    def step_and_signal(*step_args, **step_kwargs):
      calls.append(1)
      if len(calls) == call:
        os.kill(os.getpid(), signal.SIGTERM)
      return train_step(*step_args, **step_kwargs)

    return step_and_signal

  monkeypatch.setattr(steps, "make_train_step", make_signalling_step)
