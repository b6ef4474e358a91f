"""The training binary: flags, the exit-status contract, resume after SIGKILL, --helpfull."""

import glob
import json
import os
import signal
import time

import orbax.checkpoint as ocp
import pytest
from absl import flags

from conftest import ROOT, finish, max_abs_diff, parse_run, run_binary, start_binary
from sam_jax import original_flags, train
from sam_jax.errors import Stopped, UsageError


def digits_args(workdir, *overrides):
  return [f"--config={ROOT}/configs/smoke.py", f"--workdir={workdir}", "--config.dataset=digits",
          "--config.batch_size=64", "--config.num_epochs=1", *overrides]


def final_state(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.StandardRestore())
  return step, {"params": state["params"], "ema": state["ema"]}


@pytest.mark.slow
@pytest.mark.usefixtures("digits")  # prepared once, not by two processes at the same time
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_parameters(tmp_path):
  # With cutout and an EMA (averaging from step 5), whose state must resume too; a
  # checkpoint every 2 steps (at smoke.py's log steps).
  def args(workdir):
    return digits_args(workdir, "--config.batch_level_augmentations=cutout",
                       "--config.cutout_length=3", "--config.ema_decay=0.9",
                       "--config.ema_warmup_steps=5", "--config.save_progress_seconds=0")
  whole = start_binary("sam_jax.train", *args(tmp_path / "whole"))
  killed_dir = tmp_path / "killed"
  killed = start_binary("sam_jax.train", *args(killed_dir))
  deadline = time.time() + 240
  while time.time() < deadline and killed.poll() is None:  # the first checkpoint, then kill
    if [p for p in glob.glob(str(killed_dir / "checkpoints" / "*" / "_CHECKPOINT_METADATA"))
        if os.path.basename(os.path.dirname(p)).isdigit()]:  # not Orbax's tmp folders
      break
    time.sleep(0.05)
  killed.send_signal(signal.SIGKILL)
  finish(killed)
  assert not (killed_dir / "results.json").exists(), "the run ended before it was killed"
  done = finish(whole)
  assert done.returncode == 0, done.stderr[-3000:]

  resumed = run_binary("sam_jax.train", *args(killed_dir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from the checkpoint at step" in resumed.stderr
  (step_a, state_a), (step_b, state_b) = final_state(tmp_path / "whole"), final_state(killed_dir)
  assert step_a == step_b == 1437 // 64
  assert max_abs_diff(state_a, state_b) < 1e-6
  assert max_abs_diff(state_a["ema"], state_b["ema"]) < 1e-6
  assert max_abs_diff(state_a["ema"]["params"], state_a["params"]) > 1e-4  # an average
  results = json.loads((killed_dir / "results.json").read_text())
  assert {"test_error", "raw_test_error"} <= set(results)  # the EMA's, then the weights'


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["--config.sam.m=3"], "m=3 examples per replica does not divide the per-device batch of "
                           "32 (global batch 64 over 2 devices): choose m among the divisors "
                           "of 32."),
    # ml_collections reads --config.FIELD overrides when the binary defines its flags.
    (["--config.sam.rh0=0.1"], "a --config.FIELD override names a field the config does not "
                               "have: 'rh0'. (python -m sam_jax.train --helpfull lists the "
                               "fields)."),
    (["--config.autoaugment_faithful_magnitudes=True"],  # renamed: ml_collections' hint
     "a --config.FIELD override names a field the config does not have: "
     "'autoaugment_faithful_magnitudes'. Did you mean \"autoaugment_faithful\" instead of "
     "\"autoaugment_faithful_magnitudes\"? (python -m sam_jax.train --helpfull lists the "
     "fields)."),
])
def test_bad_input_is_one_line_on_stderr_exit_status_2_and_nothing_written(argv, message,
                                                                           tmp_path):
  done = run_binary("sam_jax.train", *digits_args(tmp_path / "run", *argv), devices=2)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == f"sam_jax.train: error: {message}"
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    ([f"--config={ROOT}/configs/table1_wrn28x10_200ep.py:cifar10,autoaug,sam"],
     "Unknown experiment cell 'cifar10,autoaug,sam'"),
    ([f"--config={ROOT}/configs/nothing.py"], "configs/nothing.py"),
    (["--num_epochs=ten"], "--num_epochs"),
])
def test_bad_flags_are_one_line_and_exit_status_2(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    try:  # what app.run does, up to the training (never reached here)
      train.main(train.parse_flags(["train", *argv, "--workdir=/tmp/unused"]))
    finally:
      flags.FLAGS.unparse_flags()
  assert exit_.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("sam_jax.train: error: ") and message in lines[0]


def test_a_missing_workdir_is_a_usage_error():
  with pytest.raises(UsageError, match=r"Say where the run lives: --workdir=DIR"):
    parse_run(["--num_epochs=1"])


def test_original_readme_command_parses_into_the_same_setup():
  config, workdir = parse_run([
      "--dataset", "cifar10", "--model_name", "WideResnet28x10", "--output_dir", "/tmp/out",
      "--image_level_augmentations", "autoaugment", "--num_epochs", "1800", "--sam_rho", "0.05",
      "--inner_group_size", "16", "--additional_checkpoints_at_epochs", "10,20",
      "--run_seed", "7"])
  assert workdir == "/tmp/out"
  assert (config.dataset, config.model_name, config.num_epochs) == (
      "cifar10", "WideResnet28x10", 1800)
  assert config.image_level_augmentations == "autoaugment"
  # --inner_group_size: replicas per shared perturbation (flax_training.py:87-92), not m.
  assert (config.sam.rho, config.sam.sync_group_size, config.seed) == (0.05, 16, 7)
  assert config.sam.m is None
  assert tuple(config.additional_checkpoints_at_epochs) == (10, 20)


def test_a_config_file_imports_its_siblings_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # configs/paper.py is imported as `configs.paper`
  config, _ = parse_run([f"--config={ROOT}/configs/table1_shake_shake.py:cifar100,aa,sam",
                         "--workdir=w"])
  assert (config.model_name, config.sam.rho) == ("WideResnet28x6_ShakeShake", 0.05)


@pytest.mark.slow
def test_helpfull_documents_every_original_flag():
  out = run_binary("sam_jax.train", "--helpfull", timeout=120).stdout
  for name in original_flags.ORIGINAL_FLAGS:
    assert f"--{name}" in out or f"--[no]{name}" in out, name  # absl shows bools as --[no]x
  assert "--config" in out and "--workdir" in out


def test_a_stopped_run_is_one_line_and_exit_status_0(monkeypatch, capsys):
  from sam_jax import loop
  message = "stopped by SIGTERM at step 3 of 9, saved in /w/checkpoints; the same command ..."
  def stop(config, workdir):
    raise Stopped(message)
  monkeypatch.setattr(loop, "train_and_evaluate", stop)
  try:  # what app.run does; main returning is exit status 0
    train.main(train.parse_flags(["train", f"--config={ROOT}/configs/smoke.py",
                                  "--workdir=/tmp/unused"]))
  finally:
    flags.FLAGS.unparse_flags()
  assert capsys.readouterr().err == f"sam_jax.train: {message}\n"
