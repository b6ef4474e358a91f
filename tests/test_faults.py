"""Faults a long run meets, in-process on the digits: a loss that becomes NaN, damaged
checkpoints and data, a full or read-only workdir. Each gives one line (a warning where
the run goes on) and no good checkpoint is lost."""

import glob
import json
import logging
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, max_abs_diff, scalars, tiny_config
from sam_jax import checkpoints, loop, run_files, run_setup
from sam_jax.errors import UsageError

# 4 steps of 64 digits; a checkpoint at every logged step (2 and 4).
FIELDS = dict(dataset="digits", batch_size=64, num_train_steps=4, log_every_steps=2,
              save_progress_seconds=0)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
  """A finished 4-step run: checkpoints at steps 2 and 4."""
  workdir = tmp_path_factory.mktemp("good")
  loop.train_and_evaluate(tiny_config(**FIELDS), str(workdir))
  return workdir


def copy_of(workdir, tmp_path):
  shutil.copytree(workdir, tmp_path / "run")
  return tmp_path / "run"


def nan_at(step_number, monkeypatch):
  """Makes the train step see NaN images at update `step_number` (1-based), as a batch or
  an overflow would: the real step computes on them and detects the NaN itself."""
  real = run_setup.steps.make_train_step

  def make_train_step(*args, **kwargs):
    step = real(*args, **kwargs)

    def poisoned(state, batch, rng, sam_step=None):
      if int(state.step) + 1 == step_number:
        batch = dict(batch, image=batch["image"] * jnp.nan)
      return step(state, batch, rng, sam_step=sam_step)

    return poisoned

  monkeypatch.setattr(run_setup.steps, "make_train_step", make_train_step)


@pytest.mark.slow
def test_a_nan_stops_the_run_without_saving_it_or_is_skipped_when_asked(
    good_run, tmp_path, monkeypatch):
  # Resumed at step 4, step 6 is NaN: the run stops naming it; the checkpoint of step 5
  # stays the last, nothing non-finite reaches the disk, results.json is not touched.
  nan_at(6, monkeypatch)
  workdir = copy_of(good_run, tmp_path)
  longer = dict(FIELDS, num_train_steps=8, log_every_steps=1, keep_checkpoints=8)
  with pytest.raises(
      UsageError, match=r"^The loss or gradient became NaN/Inf at step 6 of 8; "
      r"nothing after it was saved \(the last good checkpoint "
      r"is step 5 in .*\)\. Lower --config.learning_rate"):
    loop.train_and_evaluate(tiny_config(**longer), str(workdir))
  step, saved = checkpoints.read(str(workdir))
  assert step == 5 and all(np.isfinite(x).all() for x in jax.tree.leaves(saved))
  assert (workdir / "results.json").read_text() == (good_run / "results.json").read_text()

  # With nonfinite=skip the run goes on: step 6's update is skipped (its checkpoint holds
  # step 5's parameters), counted in TensorBoard, and steps 7 and 8 train again.
  workdir = copy_of(good_run, tmp_path / "skip")
  results = loop.train_and_evaluate(tiny_config(**longer, nonfinite="skip"), str(workdir))
  (_, at_6), (_, at_8) = (checkpoints.read(str(workdir), s) for s in (6, 8))
  assert max_abs_diff(saved["params"], at_6["params"]) == 0.0
  assert max_abs_diff(at_6["params"], at_8["params"]) > 0.0
  assert scalars(workdir, "skipped_steps") == {2: 0, 4: 0, 5: 0, 6: 1, 7: 0, 8: 0}
  written = json.loads((workdir / "results.json").read_text())
  assert written == pytest.approx(results) and np.isfinite(written["test_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["empty _METADATA", "truncated arrays", "empty manifest"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_one_before_used(
    good_run, tmp_path, damage, caplog):
  workdir = copy_of(good_run, tmp_path)
  newest = workdir / "checkpoints" / "4" / "default"
  if damage == "empty _METADATA":
    (newest / "_METADATA").write_text("")
  elif damage == "empty manifest":  # the OCDBT database's root: its arrays cannot be found
    (newest / "manifest.ocdbt").write_bytes(b"")
  else:
    for path in glob.glob(str(newest / "ocdbt.process_0" / "d" / "*")):
      os.truncate(path, 10)
  results = loop.train_and_evaluate(tiny_config(**FIELDS), str(workdir))
  assert results["steps"] == 4  # steps 3 and 4 again, from step 2
  aside = workdir / "unreadable_checkpoints" / "4"
  assert aside.is_dir()  # kept, not deleted
  warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].startswith(
      f"The checkpoint at step 4 in {workdir / 'checkpoints'} cannot be read (")
  assert warnings[0].endswith(f"): moved to {aside}; trying the one before.")
  assert max_abs_diff(
      checkpoints.read(str(workdir))[1]["params"],
      checkpoints.read(str(good_run))[1]["params"]) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("failure", [
    MemoryError(),
    ValueError("RESOURCE_EXHAUSTED: out of memory"),
    OSError(5, "Input/output error")
])
def test_a_checkpoint_that_fails_to_read_without_damage_is_left_in_place(
    good_run, tmp_path, monkeypatch, failure):
  workdir = copy_of(good_run, tmp_path)
  before = files_of(workdir)
  del before[pathlib.Path(run_files.OWNER)]  # who tried last

  def failing(*args, **kwargs):
    raise failure

  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "restore", failing)
  with pytest.raises(
      UsageError, match=rf"^The checkpoint at step 4 in {workdir / 'checkpoints'} could not "
      r"be read \(.*\); nothing shows it damaged, so it is left in place: run the same "
      r"command again"):
    loop.train_and_evaluate(tiny_config(**FIELDS), str(workdir))
  after = files_of(workdir)
  del after[pathlib.Path(run_files.OWNER)]
  assert after == before  # nothing moved aside, nothing written


@pytest.mark.slow
def test_every_process_restores_the_step_they_agree_on(good_run, tmp_path, monkeypatch, caplog):
  """Another process found step 4 damaged where this one read it: all set it aside and
  restore step 2 (the agreement is `processes.gather` of what each found)."""
  workdir = copy_of(good_run, tmp_path)
  scripted = [np.array([0, 1])]  # this process read step 4, process 1 found it damaged

  def gather(value):
    return scripted.pop(0) if scripted else np.asarray(value)[None]

  monkeypatch.setattr(checkpoints, "processes", types.SimpleNamespace(gather=gather))
  caplog.set_level(logging.INFO, logger="absl")  # whatever verbosity a test left
  results = loop.train_and_evaluate(tiny_config(**FIELDS), str(workdir))
  assert (workdir / "unreadable_checkpoints" / "4").is_dir() and results["steps"] == 4
  assert "Resumed from the checkpoint at step 2" in caplog.text
  assert "(damaged on another process): moved to" in caplog.text


def test_random_bytes_in_a_data_file_are_one_line(tmp_path, digits):
  shutil.copytree(os.path.join(os.environ["TFDS_DATA_DIR"], "digits"), tmp_path / "data" / "digits")
  (train_file,) = glob.glob(str(tmp_path / "data" / "digits" / "*" / "digits-train.tfrecord*"))
  with open(train_file, "r+b") as f:
    f.seek(5000)
    f.write(np.random.default_rng(0).bytes(100))
  with pytest.raises(
      UsageError, match=r"^TFDS dataset 'digits' in .*/data is damaged "
      r"\(DataLossError: corrupted record at \d+\): delete "):
    loop.train_and_evaluate(
        tiny_config(**FIELDS, data_dir=str(tmp_path / "data")), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MB tmpfs, unmounted afterwards."""
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                     str(disk)], capture_output=True).returncode:
    pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
  yield disk
  subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk, leave: int) -> None:
  """Writes a file that leaves `leave` bytes free on `disk`."""
  free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
  with open(disk / f"filler{leave}", "wb") as f:
    f.write(b"\0" * max(free - leave, 0))


def size_on(disk, folder) -> int:
  """Bytes that a copy of `folder` takes on `disk`, measured by copying it there."""
  before = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
  shutil.copytree(folder, disk / "measured")
  size = before - os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
  shutil.rmtree(disk / "measured")
  return size


@pytest.mark.slow
def test_a_full_or_read_only_workdir_is_one_line(small_disk, good_run):
  # Read-only, holding a run: one line before training, the run as it was.
  shutil.copytree(good_run / "checkpoints" / "2", small_disk / "run" / "checkpoints" / "2")
  subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
  with pytest.raises(
      UsageError, match=r"^Cannot write in .*/disk/run \(Read-only file "
      r"system\): choose another --workdir or make room"):
    loop.train_and_evaluate(tiny_config(**FIELDS), str(small_disk / "run"))
  assert checkpoints.read(str(small_disk / "run"))[0] == 2
  subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
  shutil.rmtree(small_disk / "run")

  # Full in the middle of the run, room for one and a half checkpoints (a digits checkpoint
  # takes 0.85-0.95 MB on tmpfs, more or less as Orbax's writers split it into files):
  # step 2's checkpoint fits, step 4's fails, and the run stops, instead of training on
  # unprotected: at step 4 if the save's synchronous part fails, else at the next log step
  # (6), once the background writes have failed.
  fill(small_disk, int(1.5 * size_on(small_disk, good_run / "checkpoints" / "2")))
  with pytest.raises(
      UsageError, match=r"^Could not write the checkpoint of step 4 in .*/disk/run/"
      r"checkpoints \(No space left on device\); the last complete one, step 2, is intact: "
      r"make room there"):
    loop.train_and_evaluate(
        tiny_config(**dict(FIELDS, num_train_steps=40)), str(small_disk / "run"))
  assert max(scalars(small_disk / "run", "train_loss")) in (4, 6)
  assert checkpoints.read(str(small_disk / "run"))[0] == 2

  # The same when the run saves seldom (every hour; at epoch 1, step 22, as an additional
  # checkpoint), 200 KB left: the failed save is found at a log step, long before the next.
  shutil.rmtree(small_disk / "run")
  fill(small_disk, 200_000)
  with pytest.raises(
      UsageError, match=r"^Could not write the checkpoint of step 22 in .*"
      r"\(No space left on device\); none was complete before"):
    loop.train_and_evaluate(
        tiny_config(**dict(FIELDS, num_train_steps=200, save_progress_seconds=3600,
                           additional_checkpoints_at_epochs=(1,))), str(small_disk / "run"))
  # Found at step 22 itself when the synchronous part of the save fails, else at a later
  # log step.
  assert 22 <= max(scalars(small_disk / "run", "train_loss")) < 200
  shutil.rmtree(small_disk / "run")

  # No room for the first checkpoint: one line.
  with pytest.raises(
      UsageError, match=r"^Could not write the checkpoint of step 2 in .*/disk/run/"
      r"checkpoints \(No space left on device\); none was "
      r"complete before: make room there"):
    loop.train_and_evaluate(tiny_config(**FIELDS), str(small_disk / "run"))

  # Full before it starts: one line before training.
  fill(small_disk, 0)
  with pytest.raises(UsageError, match=r"^Cannot write in .*/disk/run \(No space left on "
                     r"device\)"):
    loop.train_and_evaluate(tiny_config(**FIELDS), str(small_disk / "run"))


def test_a_json_write_that_fails_midway_leaves_the_old_file(tmp_path, monkeypatch):
  """results.json, config.json and config_changes.json are written beside and renamed: a
  crash or a full disk before the rename leaves the previous file whole."""
  run_files.write_json(str(tmp_path), run_files.RESULTS, {"test_error": 0.1})
  before = (tmp_path / run_files.RESULTS).read_text()

  def full_disk(fd):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "fsync", full_disk)
  with pytest.raises(OSError, match="No space left"):
    run_files.write_json(str(tmp_path), run_files.RESULTS, {"test_error": 0.2})
  assert (tmp_path / run_files.RESULTS).read_text() == before
  assert os.listdir(tmp_path) == [run_files.RESULTS]  # nothing half-written left beside it


def files_of(folder):
  return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_held_workdir_is_refused_and_a_dead_owners_is_taken_over(good_run, tmp_path):
  """Another process holds the workdir (a run of the same command, say): a second run
  refuses at once naming it, writing nothing; killed with -9, its hold goes with it."""
  workdir = copy_of(good_run, tmp_path)
  holder = subprocess.Popen([
      sys.executable, "-c", "import sys, time\nfrom sam_jax import run_files\n"
      "with run_files.own(sys.argv[1]):\n  print('held', flush=True)\n  time.sleep(600)",
      str(workdir)
  ], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    before = files_of(workdir)
    longer = tiny_config(**dict(FIELDS, num_train_steps=6))
    with pytest.raises(
        UsageError, match=rf"^{workdir} is in use by another run \(pid {holder.pid} on "
        rf"{socket.gethostname()}, since \d{{4}}-.*\): wait for it to end or stop it, or give "
        "another --workdir.$"):
      loop.train_and_evaluate(longer, str(workdir))
    assert files_of(workdir) == before  # the first run's files, as they were
  finally:
    holder.kill()  # SIGKILL: no clean-up of any kind
    holder.wait()
  assert loop.train_and_evaluate(longer, str(workdir))["steps"] == 6  # resumed from step 4


def test_a_single_process_saves_replicated_arrays_without_compiling(tmp_path):
  """Orbax's replica-parallel save slices each replicated array on the devices, a program
  per shape (`checkpoints.save_whole_replicas` turns it off in one process); the arrays
  come back whole."""
  compiles, listening = [], [True]
  jax.monitoring.register_event_duration_secs_listener(lambda event, duration, **kwargs: listening[
      0] and event == "/jax/core/compile/backend_compile_duration" and compiles.append(duration))
  mesh = jax.sharding.Mesh(jax.devices(), ("devices",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  host = {"w": np.arange(37 * 24, dtype=np.float32).reshape(37, 24), "b": np.ones(40, np.int32)}
  state = jax.device_put(host, replicated)  # shapes no other test slices
  checkpoints.save_whole_replicas()
  manager = checkpoints.make_manager(str(tmp_path))
  manager.save(0, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  listening[0] = False
  assert len(jax.devices()) == 8 and compiles == []
  restored = manager.restore(0, args=ocp.args.StandardRestore(state))
  assert max_abs_diff(restored, host) == 0
  manager.close()
