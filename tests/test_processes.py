"""Several processes on JAX's distributed runtime, on this machine: 2 processes x 4 CPU
devices (gloo collectives between them) train what 1 process x 8 devices trains, and a
run survives a killed peer, SIGTERM and Ctrl-C, and changes of the number of processes
(1 -> 2 -> 2 -> 1) to end where the uninterrupted run did; and the step compiles for 16
devices in 2 processes."""

import os
import re
import signal
import socket
import sys
import time

import numpy as np
import pytest

from conftest import (finish, max_abs_diff, run_binary, scalars, sigterm_at_call, start_process,
                      start_processes, tiny_config)
from sam_jax import checkpoints, loop
from sam_jax.errors import Stopped

# A short digits run (1,437 training examples: 22 steps of 64 per epoch), every step logged,
# with cutout and an EMA (averaging from step 5): their randomness and state must resume too.
FIELDS = dict(dataset="digits", batch_size=64, num_train_steps=14, log_every_steps=1,
              eval_every_steps=6, batch_level_augmentations="cutout", cutout_length=3,
              ema_decay=0.9, ema_warmup_steps=5)
ARGS = ["--config=configs/smoke.py", *(f"--config.{k}={v}" for k, v in FIELDS.items())]


def saved_steps(workdir) -> list[int]:
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def wait_for_checkpoint(workdir, step: int, processes, timeout: float = 240) -> None:
  deadline = time.monotonic() + timeout
  while not any(s >= step for s in saved_steps(workdir)):
    assert time.monotonic() < deadline and all(p.poll() is None for p in processes), [
        finish(p).stderr[-2000:] for p in processes
    ]
    time.sleep(0.2)


@pytest.mark.slow
def test_two_processes_train_as_one_and_survive_a_dead_peer_sigterm_and_ctrl_c(
    tmp_path, monkeypatch):
  # The reference: 1 process x 8 devices reading the training split as 2 shards, which
  # is how 2 processes read it (config.data_shards defaults to the process count). Saved
  # at the end only (bookkeeping): only its final checkpoint is read.
  one = loop.train_and_evaluate(
      tiny_config(**FIELDS, data_shards=2, save_progress_seconds=3600), str(tmp_path / "one"))

  # The run under test goes 1 -> 2 -> 2 -> 1 processes. One process of 8 devices starts
  # it and is stopped (SIGTERM) after 3 steps ...
  run = tmp_path / "run"
  sigterm_at_call(monkeypatch, 3)
  config = tiny_config(**FIELDS, data_shards=2, save_progress_seconds=0)
  with pytest.raises(Stopped, match="at step 3 of 14"):
    loop.train_and_evaluate(config, str(run))
  monkeypatch.undo()

  # ... 2 processes x 4 devices go on from its checkpoint, evaluate at step 6, and one of
  # them is killed (SIGKILL) after step 7: the other stops within a bounded time with
  # JAX's line, and the last checkpoint it finished is intact (one at every step here) ...
  # (data_shards=2 is their default; said here, as the run's config.json has it.)
  args = [*ARGS, "--config.data_shards=2", "--config.save_progress_seconds=0", f"--workdir={run}"]
  processes = start_processes(2, 4, *args, heartbeat_timeout_seconds=5)
  wait_for_checkpoint(run, 7, processes)
  processes[1].kill()
  killed_at = time.monotonic()
  survivor = finish(processes[0], timeout=120)
  assert time.monotonic() - killed_at < 45  # the heartbeat timeout, 5 s, and the abort
  # JAX's coordination service stops it once the dead peer's heartbeats have stopped, unless
  # gloo aborts it first, the peer having died in a collective the two shared (a save's sync).
  said = [line for line in survivor.stderr.splitlines() if not re.match(r"I\d{4} ", line)][:30]
  assert survivor.returncode != 0 and ("another task died" in survivor.stderr
                                       or "gloo::EnforceNotMet" in survivor.stderr), said
  assert "process 0 of 2: 4 cpu devices (0-3 of 8); training shards 0-0 of 2" in survivor.stderr
  finish(processes[1])
  killed_step = checkpoints.read(str(run))[0]
  assert killed_step >= 7

  # ... restarted, SIGTERM to process 0 and Ctrl-C to process 1 mid-epoch: both save the
  # same step (JAX's preemption sync point) and exit 0 with one line ...
  processes = start_processes(2, 4, *args)
  wait_for_checkpoint(run, killed_step + 2, processes)
  processes[0].send_signal(signal.SIGTERM)
  processes[1].send_signal(signal.SIGINT)
  stopped = [finish(p, timeout=120) for p in processes]
  assert [p.returncode for p in stopped] == [0, 0], [p.stderr[-3000:] for p in stopped]
  lines = [p.stderr.strip().splitlines()[-1] for p in stopped]
  step = int(lines[0].split(" at step ")[1].split()[0])
  assert lines == [
      f"sam_jax.train: stopped by {name} at step {step} of 14, saved in "
      f"{run}/checkpoints; the same command resumes from there." for name in ("SIGTERM", "SIGINT")
  ]
  assert killed_step + 2 <= step < 14 and saved_steps(run)[-1] == step

  # ... and one process finishes from the 2 processes' checkpoint.
  results = loop.train_and_evaluate(config, str(run))

  # What 2 processes computed equals what 1 process computed: the loss of every step
  # they took, the evaluation at step 6 (every test example once), and through them the
  # final parameters. Tolerance: gloo sums the processes' partial gradients in another
  # order than one process sums its devices', so float32 results may differ in the last
  # bits; 14 SGD steps keep that below 1e-5.
  two_process_steps = range(4, step + 1)
  losses_one, losses_run = (scalars(tmp_path / name, "train_loss") for name in ("one", "run"))
  np.testing.assert_allclose([losses_run[s] for s in two_process_steps],
                             [losses_one[s] for s in two_process_steps], rtol=1e-5)
  for name in ("test_error", "test_examples"):
    assert scalars(run, name)[6] == scalars(tmp_path / "one", name)[6], name
  assert scalars(run, "test_examples")[6] == 360
  (_, final), (_, reference) = checkpoints.read(str(run)), checkpoints.read(str(tmp_path / "one"))
  assert max_abs_diff(final["params"], reference["params"]) < 1e-5
  assert max_abs_diff(final["ema"], reference["ema"]) < 1e-5
  assert results["test_error"] == one["test_error"]


COMPILE_ON_16_DEVICES = """
import sys, jax, jax.numpy as jnp
from configs import default
from sam_jax import optim, processes, replicas, steps
from sam_jax.models import get_model
processes.initialize(sys.argv[1], 2, int(sys.argv[2]))
layout = replicas.make_layout(256)  # 16 devices x 1 replica x m = 16
mesh = replicas.make_mesh()
model = get_model("WideResnet10x1", 10)
tx = optim.create_optimizer(default.get_config(), 100, replicas.REPLICA_AXES)
state = jax.eval_shape(lambda: steps.init_train_state(model, tx, jax.random.key(0), (32, 32, 3)))
state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                    sharding=replicas.replicated(mesh)), state)
batch = {"image": jax.ShapeDtypeStruct((256, 32, 32, 3), jnp.float32,
                                       sharding=replicas.batch_sharding(mesh)),
         "label": jax.ShapeDtypeStruct((256,), jnp.int32, sharding=replicas.batch_sharding(mesh))}
step = steps.make_train_step(model, tx, mesh, layout)
step.program().lower(state, batch, jax.random.key(1)).compile()
print(processes.describe(f"{layout.num_replicas} replicas, per device {layout.per_device_batch}"))
"""


@pytest.mark.slow
def test_the_step_compiles_for_16_devices_in_2_processes():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    address = f"localhost:{s.getsockname()[1]}"
  started = [
      start_process([sys.executable, "-c", COMPILE_ON_16_DEVICES, address,
                     str(i)], devices=8) for i in range(2)
  ]
  runs = [finish(p, timeout=300) for p in started]
  assert [r.returncode for r in runs] == [0, 0], [r.stderr[-3000:] for r in runs]
  assert [run.stdout.strip() for run in runs] == [
      f"process {i} of 2: 8 cpu devices ({8 * i}-{8 * i + 7} of 16); 16 replicas, per device 16"
      for i in range(2)
  ]


@pytest.mark.slow
def test_a_peer_that_never_comes_ends_the_wait_in_one_line(tmp_path):
  """Process 0 of 2 alone: after --startup_timeout_seconds, one line and status 2 (JAX
  alone would abort with a C++ stack trace after 5 minutes)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  done = run_binary("sam_jax.train", *ARGS, f"--workdir={tmp_path / 'run'}",
                    f"--coordinator_address=localhost:{port}", "--num_processes=2",
                    "--process_id=0", "--startup_timeout_seconds=4", timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      f"sam_jax.train: error: process 0 of 2 waited 4 s at localhost:{port} and the other "
      "processes did not all join: start every one with the same --coordinator_address and "
      "--num_processes and its own --process_id (0 runs the coordinator), or wait longer "
      "with --startup_timeout_seconds.")
  assert "Check failure stack trace" not in done.stderr


@pytest.mark.slow
def test_a_backend_that_cannot_start_is_one_line(tmp_path):
  done = run_binary("sam_jax.train", *ARGS, f"--workdir={tmp_path / 'run'}",
                    env_overrides={"JAX_PLATFORMS": "cuda"}, timeout=120)
  assert done.returncode == 2 and "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1].startswith(
      "sam_jax.train: error: JAX has no backend to run on (JAX_PLATFORMS=cuda: ")
  assert not (tmp_path / "run").exists()
