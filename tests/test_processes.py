"""Several processes on JAX's distributed runtime, on this machine: 2 processes x 4 CPU
devices (gloo collectives between them) train what 1 process x 8 devices trains, and a
run survives a killed peer, SIGTERM and Ctrl-C, and changes of the number of processes
(1 -> 2 -> 2 -> 1) to end where the uninterrupted run did."""

import glob
import json
import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import finish, max_abs_diff, start_processes, tiny_config
from sam_jax import checkpoints, loop, replicas
from sam_jax.errors import Stopped

# A short digits run (1,437 training examples: 22 steps of 64 per epoch), every step logged.
FIELDS = dict(dataset="digits", batch_size=64, num_train_steps=14, log_every_steps=1)
ARGS = ["--config=configs/smoke.py", *(f"--config.{k}={v}" for k, v in FIELDS.items())]


def train_losses(workdir) -> dict[int, float]:
  losses = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == "train_loss":
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  return losses


def saved_steps(workdir) -> list[int]:
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def wait_for_checkpoint(workdir, step: int, processes, timeout: float = 240) -> None:
  deadline = time.monotonic() + timeout
  while not any(s >= step for s in saved_steps(workdir)):
    assert time.monotonic() < deadline and all(p.poll() is None for p in processes), [
        finish(p).stderr[-2000:] for p in processes]
    time.sleep(0.2)


@pytest.mark.slow
def test_two_processes_train_as_one_and_survive_a_dead_peer_sigterm_and_ctrl_c(tmp_path,
                                                                               monkeypatch):
  # The reference: 1 process x 8 devices reading the training split as 2 shards, which
  # is how 2 processes read it (config.data_shards defaults to the process count).
  one = loop.train_and_evaluate(tiny_config(**FIELDS, data_shards=2), str(tmp_path / "one"))

  two = [finish(p) for p in start_processes(2, 4, *ARGS, f"--workdir={tmp_path / 'two'}")]
  assert [p.returncode for p in two] == [0, 0], [p.stderr[-3000:] for p in two]
  for p in two:  # one line per process: which it is, its devices, its data
    assert "of 2: 4 cpu devices" in p.stderr and "training shards" in p.stderr
  # Same losses per step, parameters and test error. Tolerance: gloo sums the processes'
  # partial gradients in another order than one process sums its devices', so float32
  # results may differ in the last bits; 14 SGD steps keep that below 1e-5.
  losses_one, losses_two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
  assert sorted(losses_two) == list(range(1, 15))
  np.testing.assert_allclose([losses_two[s] for s in range(1, 15)],
                             [losses_one[s] for s in range(1, 15)], rtol=1e-5)
  params_one = checkpoints.read(str(tmp_path / "one"))[1]["params"]
  params_two = checkpoints.read(str(tmp_path / "two"))[1]["params"]
  assert max_abs_diff(params_one, params_two) < 1e-5
  results_two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert results_two["test_examples"] == one["test_examples"] == 360  # each example once
  assert results_two["test_error"] == one["test_error"]

  # One process of 8 devices starts a run and is stopped (SIGTERM) after 3 steps ...
  chain = tmp_path / "chain"
  calls = []
  shard_batch = replicas.shard_batch
  def shard_and_signal(batch, mesh):
    calls.append(1)
    if len(calls) == 3:
      os.kill(os.getpid(), signal.SIGTERM)
    return shard_batch(batch, mesh)
  monkeypatch.setattr(replicas, "shard_batch", shard_and_signal)
  config = tiny_config(**FIELDS, data_shards=2, save_progress_seconds=0)
  with pytest.raises(Stopped, match="at step 3 of 14"):
    loop.train_and_evaluate(config, str(chain))

  # ... 2 processes go on from its checkpoint; one is killed (SIGKILL): the other stops
  # within a bounded time with JAX's line, and the last checkpoint it finished is intact
  # (here a checkpoint every step) ...
  args = [*ARGS, "--config.save_progress_seconds=0", f"--workdir={chain}"]
  processes = start_processes(2, 4, *args, heartbeat_timeout_seconds=5)
  wait_for_checkpoint(chain, 5, processes)
  processes[1].kill()
  killed_at = time.monotonic()
  survivor = finish(processes[0], timeout=120)
  assert time.monotonic() - killed_at < 45  # the heartbeat timeout, 5 s, and the abort
  assert survivor.returncode != 0 and "another task died" in survivor.stderr
  finish(processes[1])
  killed_step = checkpoints.read(str(chain))[0]
  assert killed_step >= 5

  # ... restarted, SIGTERM to process 0 and Ctrl-C to process 1 mid-epoch: both save the
  # same step (JAX's preemption sync point) and exit 0 with one line ...
  processes = start_processes(2, 4, *args)
  wait_for_checkpoint(chain, killed_step + 2, processes)
  processes[0].send_signal(signal.SIGTERM)
  processes[1].send_signal(signal.SIGINT)
  stopped = [finish(p, timeout=120) for p in processes]
  assert [p.returncode for p in stopped] == [0, 0], [p.stderr[-3000:] for p in stopped]
  lines = [p.stderr.strip().splitlines()[-1] for p in stopped]
  step = int(lines[0].split(" at step ")[1].split()[0])
  assert lines == [f"sam_jax.train: stopped by {name} at step {step} of 14, saved in "
                   f"{chain}/checkpoints; the same command resumes from there."
                   for name in ("SIGTERM", "SIGINT")]
  assert killed_step + 2 <= step < 14 and saved_steps(chain)[-1] == step

  # ... and one process finishes from the 2 processes' checkpoint where the uninterrupted
  # 2-process run ended.
  monkeypatch.setattr(replicas, "shard_batch", shard_batch)
  assert loop.train_and_evaluate(config, str(chain))["test_error"] == one["test_error"]
  assert max_abs_diff(checkpoints.read(str(chain))[1]["params"], params_two) < 1e-5
