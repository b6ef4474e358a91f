"""The training binary: flags, the exit-status contract, resume after SIGKILL, --helpfull."""


import pytest
from absl import flags

from conftest import ROOT, parse_run, run_binary
from sam_jax import original_flags, train
from sam_jax.errors import Stopped, UsageError


def digits_args(workdir, *overrides):
  return [f"--config={ROOT}/configs/smoke.py", f"--workdir={workdir}", "--config.dataset=digits",
          "--config.batch_size=64", "--config.num_epochs=1", *overrides]


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
    (["--num_processes=2"], "Several processes need all of --coordinator_address=HOST:PORT, "
                            "--num_processes and --process_id"),
    (["--coordinator_address=localhost:1", "--num_processes=2", "--process_id=2"],
     "--process_id=2 is not in [0, 2) (--num_processes=2)."),
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
