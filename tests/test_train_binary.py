"""The training binary: flags, the exit-status contract, resume after SIGKILL, --helpfull."""

import contextlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from conftest import ROOT, binary_env, finish, parse_run, run_binary, start_process
from sam_jax import config_files, original_flags, run_files, train, validation
from sam_jax.errors import Stopped, UsageError


def digits_args(workdir, *overrides):
  return [
      f"--config={ROOT}/configs/smoke.py", f"--workdir={workdir}", "--config.dataset=digits",
      "--config.batch_size=64", "--config.num_epochs=1", *overrides
  ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config.sam.m=3"], "m=3 examples per replica does not divide the per-device batch of "
         "32 (global batch 64 over 2 devices): choose m among the divisors "
         "of 32."),
        # ml_collections reads --config.FIELD overrides when the binary defines its flags.
        (["--config.sam.rh0=0.1"], "a --config.FIELD override names a field the config does not "
         "have: 'rh0'. (python -m sam_jax.train --helpfull lists the "
         "fields)."),
        (
            ["--config.autoaugment_faithful_magnitudes=True"],  # renamed: ml_collections' hint
            "a --config.FIELD override names a field the config does not have: "
            "'autoaugment_faithful_magnitudes'. Did you mean \"autoaugment_faithful\" instead of "
            "\"autoaugment_faithful_magnitudes\"? (python -m sam_jax.train --helpfull lists the "
            "fields)."),
    ])
def test_bad_input_is_one_line_on_stderr_exit_status_2_and_nothing_written(argv, message, tmp_path):
  done = run_binary("sam_jax.train", *digits_args(tmp_path / "run", *argv), devices=2)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == f"sam_jax.train: error: {message}"
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "run").exists()


def test_a_config_file_that_returns_a_dict_says_so(tmp_path, capsys):
  (tmp_path / "mine.py").write_text("def get_config():\n  return {'dataset': 'digits'}\n")
  with pytest.raises(SystemExit):
    try:
      train.parse_flags(["train", f"--config={tmp_path}/mine.py", "--workdir=/tmp/unused"])
    finally:
      flags.FLAGS.unparse_flags()
  assert capsys.readouterr().err == (
      f"sam_jax.train: error: {tmp_path}/mine.py's get_config() returned a dict, not an "
      "ml_collections.ConfigDict: build it on configs/default.py (`config = "
      "default.get_config()`, then set its fields).\n")


@pytest.mark.parametrize("argv, message", [
    ([f"--config={ROOT}/configs/table1_wrn28x10_200ep.py:cifar10,autoaug,sam"
     ], "Unknown experiment cell 'cifar10,autoaug,sam'"),
    ([f"--config={ROOT}/configs/nothing.py"], "configs/nothing.py"),
    (["--num_epochs=ten"], "--num_epochs"),
    (["--num_processes=2"], "Several processes need all of --coordinator_address=HOST:PORT, "
     "--num_processes and --process_id"),
    (["--coordinator_address=localhost:1", "--num_processes=2", "--process_id=2"
     ], "--process_id=2 is not in [0, 2) (--num_processes=2)."),
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
      "--inner_group_size", "16", "--additional_checkpoints_at_epochs", "10,20", "--run_seed", "7"
  ])
  assert workdir == "/tmp/out"
  assert (config.dataset, config.model_name, config.num_epochs) == ("cifar10", "WideResnet28x10",
                                                                    1800)
  assert config.image_level_augmentations == "autoaugment"
  # --inner_group_size: replicas per shared perturbation (flax_training.py:87-92), not m.
  assert (config.sam.rho, config.sam.sync_group_size, config.seed) == (0.05, 16, 7)
  assert config.sam.m is None
  assert tuple(config.additional_checkpoints_at_epochs) == (10, 20)


def test_a_config_file_imports_its_siblings_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # configs/paper.py is imported as `configs.paper`
  config, _ = parse_run(
      [f"--config={ROOT}/configs/table1_shake_shake.py:cifar100,aa,sam", "--workdir=w"])
  assert (config.model_name, config.sam.rho) == ("WideResnet28x6_ShakeShake", 0.05)


@pytest.mark.slow
def test_helpfull_documents_every_original_flag_and_config_field():
  out = run_binary("sam_jax.train", f"--config={ROOT}/configs/digits_demo.py", "--helpfull",
                   timeout=120).stdout
  for name in original_flags.ORIGINAL_FLAGS:
    assert f"--{name}" in out or f"--[no]{name}" in out, name  # absl shows bools as --[no]x
  assert "--config" in out and "--workdir" in out and "--[no]allow_config_changes" in out
  words = " ".join(out.split())  # absl wraps the help at 80 columns
  demo = config_files.load(f"{ROOT}/configs/digits_demo.py")  # its values are the defaults
  helps = config_files.field_help(f"{ROOT}/configs/default.py")
  fields = list(run_files.flat(demo.to_dict()))
  assert len(fields) > 50 and all(helps.get(field) for field in fields)  # and a comment
  for field in fields:
    value = validation.get(demo, field)
    kind = type(value).__name__ if value is not None else None
    assert re.search(
        rf"--config\.{re.escape(field)} \((\w+), default "
        rf"{re.escape(repr(value))}\): \S", words), field
    assert kind is None or f"--config.{field} ({kind}," in words
  assert "--config.sam.rho (float, default 0.05): the neighbourhood's radius" in words
  assert "--config.num_epochs (int, default 30)" in words  # the demo's, not default.py's 200


def finished_workdir(path, *overrides):
  """What a finished run leaves for the checks made before any training (they do not
  open checkpoints): config.json of these flags, checkpoints/22 and results.json."""
  config, _ = parse_run(digits_args(path, *overrides))
  (path / "checkpoints" / "22").mkdir(parents=True)
  run_files.write_config(config, str(path))
  (path / "results.json").write_text(
      json.dumps({
          "test_loss": 0.1,
          "test_error": 0.025,
          "test_examples": 360,
          "steps": 22,
          "epochs": 1.0
      }))
  return path


def run_main(argv, monkeypatch):
  """train.main on `argv` in-process, with the training replaced: whether it was reached."""
  from sam_jax import loop, processes  # pylint: disable=import-outside-toplevel
  trained = []
  monkeypatch.setattr(processes, "initialize", lambda *args: None)
  monkeypatch.setattr(loop, "train_and_evaluate",
                      lambda config, path: trained.append(config) or {"steps": 22})
  try:
    train.main(train.parse_flags(["train", *argv]))
  finally:
    flags.FLAGS.unparse_flags()
  return bool(trained)


def test_a_finished_run_says_so_and_changes_need_a_flag(tmp_path, monkeypatch, capsys, caplog):
  path = finished_workdir(tmp_path / "run")
  saved = (path / "config.json").read_text()
  for same in ([], ["--config.log_every_steps=5"]):  # bookkeeping does not change results
    assert not run_main(digits_args(path, *same), monkeypatch)
    assert capsys.readouterr().err == (
        f"sam_jax.train: {path} has finished (22 steps): test_loss 0.1, test_error 0.025, "
        "steps 22, epochs 1; nothing to do (results.json; another --workdir starts a new "
        "run).\n")
  with pytest.raises(SystemExit) as exit_:
    run_main(digits_args(path, "--config.sam.rho=0.1", "--config.seed=3"), monkeypatch)
  assert exit_.value.code == 2
  assert capsys.readouterr().err == (
      f"sam_jax.train: error: {path} was trained with another config (sam.rho 0.05 -> 0.1, "
      "seed 0 -> 3): give another --workdir for a new run, or --allow_config_changes to "
      "continue this one with them (recorded in config_changes.json).\n")
  assert run_main(digits_args(path, "--config.sam.rho=0.1", "--allow_config_changes"), monkeypatch)
  assert "Resuming" in caplog.text and "sam.rho 0.05 -> 0.1 (recorded in config_changes" in (
      caplog.text)
  assert run_main(digits_args(path, "--config.compute_top_5_error_rate=True"), monkeypatch)
  # An allowed change, recorded (as the training does): the run is compared with it after.
  run_files.record_changes(str(path), 22, {"sam.rho": (0.05, 0.1)})
  assert run_files.run_config(str(path)).sam.rho == 0.1  # what the analyses read too
  assert not run_main(digits_args(path, "--config.sam.rho=0.1"), monkeypatch)  # finished
  assert "has finished (22 steps)" in capsys.readouterr().err
  shutil.rmtree(path / "checkpoints")  # no checkpoint: any config starts afresh
  caplog.clear()
  assert run_main(digits_args(path, "--config.sam.rho=0.2"), monkeypatch)
  assert "Resuming" not in caplog.text
  assert (path / "config.json").read_text() == saved  # the training (replaced) writes it


def test_a_bad_config_value_is_refused_before_tensorflow_and_the_data_load(tmp_path):
  """What the README says: before TensorFlow, the models or any data (JAX itself, which the
  SAM variants' registry imports, is loaded: most of the second the answer takes)."""
  done = finish(
      start_process([
          sys.executable, "-X", "importtime", "-m", "sam_jax.train",
          *digits_args(tmp_path / "run", "--config.sam.rho=-1")
      ]))
  assert done.returncode == 2 and not (tmp_path / "run").exists()
  assert done.stderr.strip().splitlines()[-1] == (
      "sam_jax.train: error: --config.sam.rho=-1.0 is out of range: sam.rho must be a radius "
      ">= 0 (0: the base optimizer; the paper's is 0.05).")
  imported = {
      line.split("|")[-1].strip()
      for line in done.stderr.splitlines()
      if line.startswith("import time:")
  }
  assert {"ml_collections", "jax"} <= imported
  assert not imported & {
      "tensorflow", "tensorflow_datasets", "flax", "orbax", "sam_jax.data.loading"
  }


def test_a_stopped_run_is_one_line_and_exit_status_0(monkeypatch, capsys):
  from sam_jax import loop
  message = "stopped by SIGTERM at step 3 of 9, saved in /w/checkpoints; the same command ..."

  def stop(config, workdir):
    raise Stopped(message)

  monkeypatch.setattr(loop, "train_and_evaluate", stop)
  try:  # what app.run does; main returning is exit status 0
    train.main(
        train.parse_flags(["train", f"--config={ROOT}/configs/smoke.py", "--workdir=/tmp/unused"]))
  finally:
    flags.FLAGS.unparse_flags()
  assert capsys.readouterr().err == f"sam_jax.train: {message}\n"


VARIANTS = {  # each member of the SAM family as a user switches it on
    "gsam": ["--config.sam.variant=gsam"],
    "looksam": ["--config.sam.variant=looksam", "--config.sam.looksam_every=2"],
    "esam": ["--config.sam.variant=esam"],
    "gcsam": ["--config.sam.variant=gcsam", "--config.sam.every=2",  # a SGD step at 2
              "--config.sam.probability=0.5"],
    "msam": ["--config.sam.variant=msam"],
    "wsam": ["--config.sam.variant=wsam"],
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant, dataset, test_examples",
    [
        # On image datasets test_loop trains GSAM, LookSAM, ESAM and MSAM in-process.
        *((variant, "digits", 360) for variant in VARIANTS),
        *((variant, "cifar10", 32) for variant in ("esam", "msam")),
    ])
def test_every_sam_variant_trains_through_the_binary(variant, dataset, test_examples, tmp_path):
  """On the digits, 30 steps of batch 128 (8 replicas of 16) take every variant's test
  error far below chance (90%); on (random) mock CIFAR-10 the runs go through the image
  pipeline. A variant whose second pass runs at every step logs the loss at w + eps above
  the clean loss: it ascends."""
  from sam_jax import events  # pylint: disable=import-outside-toplevel
  digits = dataset == "digits"
  num_steps = 30 if digits else 3
  argv = [
      "train", f"--config={ROOT}/configs/smoke.py", f"--workdir={tmp_path}",
      f"--config.dataset={dataset}", f"--config.num_train_steps={num_steps}",
      "--config.log_every_steps=1", "--config.save_progress_seconds=3600", *VARIANTS[variant],
      *(["--config.batch_size=128", "--config.sam.m=16"] if digits else [])
  ]
  try:
    with (tfds.testing.mock_data(num_examples=test_examples,
                                 policy=tfds.testing.MockPolicy.USE_CODE)
          if dataset == "cifar10" else contextlib.nullcontext()):  # the digits are offline
      train.main(train.parse_flags(argv))
  finally:
    flags.FLAGS.unparse_flags()
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["steps"] == num_steps and results["test_examples"] == test_examples
  assert json.loads((tmp_path / "config.json").read_text())["sam"]["variant"] == variant
  if digits:
    assert results["test_error"] < 0.4, results
  scalars = events.read_scalars(str(tmp_path))
  assert sorted(scalars["train_loss"]) == list(range(1, num_steps + 1))
  assert ("train_perturbed_loss" in scalars) == (variant != "msam")  # MSAM: one pass
  if variant in ("gsam", "esam", "wsam"):  # every step; LookSAM and GCSAM here skip some
    clean, perturbed = (
        np.array(list(scalars[f"train_{kind}"].values())) for kind in ("loss", "perturbed_loss"))
    assert np.mean(perturbed - clean) > 0


@pytest.mark.slow
def test_the_demo_puts_a_relative_workdir_where_it_is_run(tmp_path):
  done = subprocess.run(["bash", f"{ROOT}/scripts/demo.sh", "here", "--config.num_train_steps=2"],
                        cwd=tmp_path, env=binary_env(), capture_output=True, text=True, timeout=600,
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads((tmp_path / "here" / "results.json").read_text())["steps"] == 2
