"""The training binary end to end: mock CIFAR family, resume after SIGKILL, flags, errors."""

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import smoke
from conftest import max_abs_diff
from sam_jax import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCK_EXAMPLES = 40


def event_tags(workdir):
  tags = set()
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "svhn", "fashion_mnist"])
def test_smoke_config_trains_on_mock_data(dataset, tmp_path):
  config = smoke.get_config()
  config.dataset = dataset
  config.num_epochs = 1
  config.batch_level_augmentations = "cutout"
  config.compute_top_5_error_rate = True
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    results = trainer.train_and_evaluate(config, str(tmp_path))
  assert results["test_examples"] == MOCK_EXAMPLES  # every test example scored once
  assert results["steps"] == MOCK_EXAMPLES // config.batch_size
  assert 0 <= results["test_error"] <= 1 and np.isfinite(results["test_loss"])
  assert results["test_top5_error"] <= results["test_error"]
  assert json.load(open(tmp_path / "results.json"))["steps"] == results["steps"]
  assert json.load(open(tmp_path / "config.json"))["dataset"] == dataset
  assert {"train_loss", "train_error", "test_loss", "test_error", "test_top5_error",
          "learning_rate", "grad_norm", "param_norm"} <= event_tags(str(tmp_path))


class Run:
  """The binary in a subprocess, its output in files (a full pipe would block it)."""

  def __init__(self, *args, devices=1):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    self.out, self.err = (tempfile.TemporaryFile("w+") for _ in range(2))
    self.proc = subprocess.Popen([sys.executable, "-m", "sam_jax.train", *args], cwd=ROOT,
                                 env=env, stdout=self.out, stderr=self.err, text=True)

  def wait(self, timeout=300) -> tuple[int, str, str]:
    """(exit code, stdout, stderr)."""
    code = self.proc.wait(timeout=timeout)
    self.out.seek(0), self.err.seek(0)
    return code, self.out.read(), self.err.read()


def final_params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.StandardRestore())
  return step, {"params": state["params"], "ema": state["ema"]}


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def digits_smoke_args(workdir, data_dir):
  return [f"--config={ROOT}/configs/smoke.py", f"--workdir={workdir}", "--config.dataset=digits",
          f"--config.data_dir={data_dir}", "--config.batch_size=64", "--config.num_epochs=2"]


def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_parameters(tmp_path, digits_dir):
  def args(workdir):  # with cutout and an EMA, whose state must resume too
    return digits_smoke_args(workdir, digits_dir) + [
        "--config.batch_level_augmentations=cutout", "--config.cutout_length=3",
        "--config.ema_decay=0.9"]
  code, _, err = Run(*args(tmp_path / "whole")).wait()
  assert code == 0, err[-3000:]

  killed_dir = tmp_path / "killed"
  killed = Run(*args(killed_dir)).proc
  deadline = time.time() + 240
  while time.time() < deadline:  # wait for the first complete checkpoint, then kill
    done = [p for p in glob.glob(str(killed_dir / "checkpoints" / "*" / "_CHECKPOINT_METADATA"))
            if os.path.basename(os.path.dirname(p)).isdigit()]  # not Orbax's tmp folders
    if done:
      break
    time.sleep(0.05)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert not (killed_dir / "results.json").exists(), "the run ended before it was killed"

  code, _, err = Run(*args(killed_dir)).wait()
  assert code == 0, err[-3000:]
  assert "Resumed from the checkpoint at step" in err
  (step_a, params_a), (step_b, params_b) = final_params(tmp_path / "whole"), final_params(killed_dir)
  assert step_a == step_b == 2 * (1437 // 64)
  assert max_abs_diff(params_a, params_b) < 1e-6
  assert params_a["ema"]["params"] and max_abs_diff(params_a["ema"], params_b["ema"]) < 1e-6


def test_a_checkpoint_of_another_model_is_a_clear_error_and_is_kept(tmp_path, digits_dir):
  args = digits_smoke_args(tmp_path, digits_dir)
  code, _, err = Run(*args[:-1], "--config.num_epochs=1").wait()
  assert code == 0, err[-3000:]
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  code, _, err = Run(*args, "--config.model_name=WideResnet10x2").wait()
  assert code == 2
  error_lines = [line for line in err.splitlines() if line.startswith("sam_jax.train: error:")]
  assert len(error_lines) == 1 and "does not fit this model" in error_lines[0]
  assert "Traceback" not in err
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


@pytest.mark.parametrize("overrides, devices, message", [
    (["--config.dataset=imagenet1k"], 1, "Unknown dataset 'imagenet1k'"),
    (["--config.model_name=WideResnet29x10"], 1, "Unknown model 'WideResnet29x10'"),
    (["--config.batch_size=100"], 8, "global batch of 100 does not split over 8 devices"),
    (["--config.sam.m=3"], 2, "m=3 examples per replica does not divide"),
    (["--config.dataset=cifar10"], 1, "TFDS dataset 'cifar10' is not prepared in"),
    (["--image_level_augmentations=autoaugmentt"], 1,
     "Unknown image_level_augmentations 'autoaugmentt': choose one of none, basic"),
    (["--config=configs/table1_wrn28x10_200ep.py:cifar10,autoaug,sam"], 1,
     "Unknown experiment cell 'cifar10,autoaug,sam'"),
    (["--config.sam.rh0=0.1"], 1, "names a field the config does not have: 'rh0'"),
    (["--config.cutout_mask=image"], 1, "Unknown cutout_mask 'image'"),
])
def test_bad_input_is_one_clear_line(tmp_path, digits_dir, overrides, devices, message):
  args = digits_smoke_args(tmp_path / "run", digits_dir)
  args[3] = f"--config.data_dir={tmp_path / 'empty' if 'cifar10' in overrides[0] else digits_dir}"
  code, _, err = Run(*args, *overrides, devices=devices).wait()
  assert code == 2
  error_lines = [line for line in err.splitlines() if line.startswith("sam_jax.train: error:")]
  assert len(error_lines) == 1 and message in error_lines[0], err[-2000:]
  assert "Traceback" not in err
  assert not (tmp_path / "run" / "checkpoints").exists()  # nothing written


def test_original_readme_command_parses_into_the_same_setup():
  from absl import flags
  from sam_jax import train
  argv = ["train", "--dataset", "cifar10", "--model_name", "WideResnet28x10", "--output_dir",
          "/tmp/out", "--image_level_augmentations", "autoaugment", "--num_epochs", "1800",
          "--sam_rho", "0.05", "--inner_group_size", "16", "--additional_checkpoints_at_epochs",
          "10,20", "--run_seed", "7"]
  flags.FLAGS(argv)
  try:
    config, workdir = train.config_from_flags(), train.workdir_from_flags()
  finally:
    flags.FLAGS.unparse_flags()
  assert workdir == "/tmp/out"
  assert (config.dataset, config.model_name, config.num_epochs) == ("cifar10", "WideResnet28x10", 1800)
  assert config.image_level_augmentations == "autoaugment"
  assert (config.sam.rho, config.sam.m, config.seed) == (0.05, 16, 7)
  assert tuple(config.additional_checkpoints_at_epochs) == (10, 20)


def test_helpfull_documents_every_original_flag():
  from sam_jax import train
  _, out, _ = Run("--helpfull").wait(timeout=120)
  for name in train.ORIGINAL_FLAGS:
    assert f"--{name}" in out or f"--[no]{name}" in out, name  # absl shows bools as --[no]x
  assert "--config" in out and "--workdir" in out
