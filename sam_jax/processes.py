"""Many processes: JAX's distributed runtime, and agreeing when to stop.

One program runs as one process per host (a TPU VM, a GPU node, a SLURM task), all
joined by JAX's coordination service; every process runs the same loop on global
arrays. `initialize` joins them: from explicit flags, else from what JAX detects
(Cloud TPU, SLURM, Open MPI, Kubernetes), else one process, which needs nothing.

Stopping: SIGTERM (a scheduler's preemption notice) and Ctrl-C ask the loop to stop
after a step and save it. With one process the loop stops after the current step. With
several, JAX's preemption notifier catches SIGTERM (on any process) and the processes
agree on the step to stop at (`multihost_utils.reached_preemption_sync_point`), so all
save the same step. If a process dies, the coordination service stops the others once
its heartbeats are missing for `heartbeat_timeout_seconds`.
"""

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax._src import xla_bridge  # backends_are_initialized: no public equivalent
from jax.experimental import multihost_utils

from sam_jax.errors import UsageError


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, heartbeat_timeout_seconds: int = 100,
               startup_timeout_seconds: int = 300) -> None:
  """Joins JAX's distributed runtime if this is one of several processes.

  With `coordinator_address`, `num_processes` and `process_id` (all three, as a launcher
  that JAX does not detect would pass them); else with what JAX detects of the cluster;
  else nothing: one process. Must run before JAX touches a device. On the CPU backend
  (tests, two processes on one machine) collectives between processes use gloo. While
  the processes gather, a line every 30 s says so; when they have not all come within
  `startup_timeout_seconds`, the process ends with one line and status 2 (JAX itself
  would abort with a C++ stack trace).

  Raises:
    UsageError: for an incomplete set of flags.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise UsageError("Several processes need all of --coordinator_address=HOST:PORT, "
                     "--num_processes and --process_id (or none, where JAX detects the "
                     "cluster: Cloud TPU, SLURM, Open MPI, Kubernetes).")
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise UsageError(f"--process_id={process_id} is not in [0, {num_processes}) "
                     f"(--num_processes={num_processes}).")
  if jax.distributed.is_initialized():
    return
  if coordinator_address is None and xla_bridge.backends_are_initialized():
    return  # called where JAX already runs (a test, a notebook): stays one process
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  with _startup_watch(coordinator_address, num_processes, process_id, startup_timeout_seconds):
    try:
      jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                 heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                                 initialization_timeout=startup_timeout_seconds + 60)
    except ValueError:  # "coordinator_address should be defined": no cluster detected
      if coordinator_address is not None:
        raise


@contextlib.contextmanager
def _startup_watch(address: str | None, count: int | None, index: int | None, timeout: int):
  """While inside, says every 30 s that the processes are still gathering, and ends this
  process with one line once `timeout` seconds have passed."""
  done, started = threading.Event(), time.monotonic()
  who = f"process {index} of {count}" if count else "this process"
  where = address or "the coordinator JAX found"

  def watch():
    while not done.wait(min(30, max(timeout - (time.monotonic() - started), 0.1))):
      waited = time.monotonic() - started
      if waited < timeout:
        print(
            f"sam_jax: {who} has waited {waited:.0f} s at {where} for the other "
            "processes to join.", file=sys.stderr, flush=True)
        continue
      print(
          f"sam_jax.train: error: {who} waited {timeout} s at {where} and the other "
          "processes did not all join: start every one with the same "
          "--coordinator_address and --num_processes and its own --process_id (0 runs the "
          "coordinator), or wait longer with --startup_timeout_seconds.", file=sys.stderr,
          flush=True)
      os._exit(2)

  threading.Thread(target=watch, daemon=True).start()
  try:
    yield
  finally:
    done.set()


def check_backend() -> None:
  """Starts JAX's backend, or says in one line why it cannot.

  Raises:
    UsageError: when no backend starts (JAX_PLATFORMS names one this machine lacks, a
      GPU plugin without a GPU...).
  """
  try:
    jax.devices()
  except (RuntimeError, AssertionError) as e:
    platforms = os.environ.get("JAX_PLATFORMS") or "any"
    reason = (str(e).strip().splitlines() or ["none of them started"])[0]
    raise UsageError(f"JAX has no backend to run on (JAX_PLATFORMS={platforms}: {reason}): "
                     "install the one you name (pip install '.[cuda]' for NVIDIA GPUs, "
                     "'.[tpu]' on a TPU VM) or unset JAX_PLATFORMS for the CPU.") from e


def describe(data_share: str) -> str:
  """The line each process logs at start: which it is, its devices, its data."""
  mine = [i for i, d in enumerate(jax.devices()) if d.process_index == jax.process_index()]
  span = f"{mine[0]}-{mine[-1]}" if mine == list(range(mine[0], mine[-1] + 1)) else mine
  return (f"process {jax.process_index()} of {jax.process_count()}: {len(mine)} "
          f"{jax.devices()[mine[0]].platform} devices ({span} of {jax.device_count()}); "
          f"{data_share}")


@contextlib.contextmanager
def stop_signals() -> Iterator[Callable[[int], str | None]]:
  """While inside, SIGTERM and Ctrl-C only ask to stop.

  Yields `stop_at(step)`, to be called after every step by every process: the name of
  the signal once the loop should stop after `step` (the same step on every process),
  None before. A second Ctrl-C stops at once. Outside the main thread (where Python
  cannot install handlers) nothing changes. The previous handlers come back on exit.
  """
  received = []
  several = jax.process_count() > 1

  def ask_to_stop(signum, frame):
    if received and signum == signal.SIGINT:
      raise KeyboardInterrupt
    received.append(signal.Signals(signum).name)
    if several:  # JAX's notifier (its SIGTERM handler) tells every process
      os.kill(os.getpid(), signal.SIGTERM)

  # With several processes SIGTERM stays with JAX's preemption notifier.
  handled = (signal.SIGINT,) if several else (signal.SIGTERM, signal.SIGINT)
  try:
    previous = {s: signal.signal(s, ask_to_stop) for s in handled}
  except ValueError:  # not the main thread
    previous = {}

  def stop_at(step: int) -> str | None:
    if several:
      if not multihost_utils.reached_preemption_sync_point(step):
        return None
      return received[0] if received else "SIGTERM"
    return received[0] if received else None

  try:
    yield stop_at
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def gather(values) -> np.ndarray:
  """`values` (numbers) of every process, stacked in process order: [process_count, ...]."""
  values = np.asarray(values)
  if jax.process_count() == 1:
    return values[None]
  return np.asarray(multihost_utils.process_allgather(values))


def agree(decision: bool) -> bool:
  """Process 0's `decision`, on every process (for choices made from a local clock)."""
  if jax.process_count() == 1:
    return decision
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(decision)))
