"""The training run in-process: every model family end to end on mock data, and every bad
input refused with one line before anything is written."""

import json
import os
import shutil
import signal

import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from conftest import max_abs_diff, repeated_points, scalars, sigterm_at_call, tiny_config
from sam_jax import checkpoints, events, loop, run_setup
from sam_jax.analysis import report
from sam_jax.data import label_noise, loading, pipeline
from sam_jax.errors import Stopped, UsageError

MOCK_EXAMPLES = 32


def event_tags(workdir):
  return set(events.read_scalars(workdir))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, dataset, sync_batch_norm, sam",
    [
        ("WideResnet_ShakeShake_mini", "cifar10", False, dict(variant="gsam", gsam_rho_min=0.01)),
        ("Pyramid_ShakeDrop_mini", "cifar100", False, dict(variant="looksam", looksam_every=2)),
        ("Resnet20", "svhn", False, dict(variant="esam")),
        ("WideResnet10x1", "fashion_mnist", True, dict(variant="msam")),  # BN over all replicas
    ])  # EfficientNet: test_pretrained's finetuning run; every variant: test_train_binary
def test_one_sam_epoch_of_each_family_on_each_small_dataset(name, dataset, sync_batch_norm, sam,
                                                            tmp_path):
  config = tiny_config(model_name=name, dataset=dataset, num_epochs=1,
                       batch_level_augmentations="cutout", compute_top_5_error_rate=True,
                       sync_batch_norm=sync_batch_norm, sam=sam)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE):
    results = loop.train_and_evaluate(config, str(tmp_path))
    # The reported metrics are the final checkpoint's, evaluated by a plain forward pass
    # over the whole test split (the parameters the variant evaluates, as the analyses
    # read them back).
    _, info, model, variables, _ = report.load_run(str(tmp_path))
    test = loading.load_split(info, info.test_split, None)
    batch = next(pipeline.eval_batches(info, test, MOCK_EXAMPLES))
  logits = model.apply(variables, batch["image"], train=False)
  labels = batch["label"]
  top5 = np.argsort(-np.asarray(logits), -1)[:, :5]
  assert results["test_loss"] == pytest.approx(
      float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()), rel=1e-5)
  assert results["test_error"] == pytest.approx(float(np.mean(np.argmax(logits, -1) != labels)))
  assert results["test_top5_error"] == pytest.approx(
      float(np.mean(~(top5 == labels[:, None]).any(-1))))
  if sam["variant"] == "msam":  # evaluated without the perturbation it keeps in the params
    saved = checkpoints.read(str(tmp_path))[1]["params"]
    assert max_abs_diff(variables["params"], saved) > 1e-4
  assert results["test_examples"] == MOCK_EXAMPLES  # every test example scored once
  assert results["steps"] == MOCK_EXAMPLES // config.batch_size == 2
  assert json.load(open(tmp_path / "results.json"))["steps"] == results["steps"]
  assert json.load(open(tmp_path / "config.json"))["sam"]["variant"] == sam["variant"]
  perturbed = {"train_perturbed_loss", "train_perturbed_error"}  # Momentum-SAM: one pass
  assert {
      "train_loss", "train_error", "test_loss", "test_error", "test_top5_error", "learning_rate",
      "grad_norm", "clean_grad_norm", "param_norm"
  } | (set() if sam["variant"] == "msam" else perturbed) <= event_tags(str(tmp_path))


@pytest.mark.slow
def test_a_digits_run_with_label_noise_finished_stopped_resumed_then_another_model(
    tmp_path, monkeypatch):
  seen = []
  real = label_noise.symmetric_noise
  monkeypatch.setattr(
      label_noise, "symmetric_noise", lambda examples, *args, **kwargs: seen.append(
          len(examples["label"])) or real(examples, *args, **kwargs))
  config = tiny_config(
      dataset="digits",
      batch_size=64,
      num_epochs=1,  # 1,437 train, 360 test
      label_noise=0.4,
      save_progress_seconds=60)
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert seen == [1437]  # the training split, once; the 360 test labels stay clean
  assert results["test_examples"] == 360 and results["steps"] == 1437 // 64
  assert abs(results["realised_label_noise"] - 0.4) < 0.05
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  again = loop.train_and_evaluate(config, str(tmp_path))  # finished: evaluates what it finds
  assert again == results

  # SIGTERM (a scheduler's preemption notice) during step 10: the loop saves step 10 and
  # stops; the same call resumes there and ends where the uninterrupted run did.
  sigterm_at_call(monkeypatch, 10)
  stopped = tmp_path / "stopped"
  with pytest.raises(
      Stopped, match=r"stopped by SIGTERM at step 10 of 22, saved in .*; the "
      "same command resumes from there"):
    loop.train_and_evaluate(config, str(stopped))
  assert checkpoints.read(str(stopped))[0] == 10 and not (stopped / "results.json").exists()
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
  resumed_config = tiny_config(**{**config.to_dict(), "save_progress_seconds": 0})
  assert loop.train_and_evaluate(resumed_config, str(stopped)) == results
  (step, resumed), (_, whole) = checkpoints.read(str(stopped)), checkpoints.read(str(tmp_path))
  assert step == 22 and max_abs_diff(resumed["params"], whole["params"]) < 1e-6
  # config.json keeps what the checkpoints were trained with; the change is recorded.
  assert json.loads((stopped / "config.json").read_text())["save_progress_seconds"] == 60
  assert json.loads((stopped / "config_changes.json").read_text()) == [{
      "step": 10,
      "changes": {
          "save_progress_seconds": [60, 0]
      }
  }]
  # Killed after step 22's metrics were written, before its checkpoint was: the rerun
  # resumes at step 20 and its curves show every step once (the finished run's too, which
  # evaluated its last step again).
  shutil.rmtree(stopped / "checkpoints" / "22")
  (stopped / "results.json").unlink()
  assert loop.train_and_evaluate(resumed_config, str(stopped)) == results
  assert repeated_points(stopped) == {} and repeated_points(tmp_path) == {}
  assert sorted(scalars(stopped, "train_loss")) == list(range(2, 23, 2))
  assert scalars(stopped, "train_loss") == pytest.approx(scalars(tmp_path, "train_loss"), rel=1e-5)
  config.model_name = "WideResnet10x2"
  with pytest.raises(
      UsageError, match=r"The checkpoint at step 22 in .* does not fit this "
      r"model and optimizer \(\d+ arrays: .*\); use another"):
    loop.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def bad(**fields):
  return tiny_config(**{"dataset": "digits", "batch_size": 64, **fields})


@pytest.mark.parametrize("config, message", [
    (bad(dataset="imagenet1k"), "Unknown dataset 'imagenet1k': choose one of cifar10, "),
    (bad(model_name="WideResnet29x10"), "Unknown model 'WideResnet29x10': choose one of"),
    (bad(batch_size=100), "The global batch of 100 does not split over 8 devices"),
    (bad(sam=dict(m=3)), "m=3 examples per replica does not divide the per-device batch of 8"),
    (bad(image_level_augmentations="autoaugmentt"),
     "Unknown image_level_augmentations 'autoaugmentt': choose one of none, basic"),
    (bad(cutout_mask="image"), "Unknown cutout_mask 'image'"),
    (bad(image_level_augmentations="autoaugment"), "No AutoAugment policy was learned on digits"),
    (bad(batch_size=2048), "The batch of 2048 is larger than the 1437 training examples"),
    (bad(lr_schedule="step"), "Unknown lr_schedule 'step'"),
    (bad(sam=dict(p=0.5)), r"sam.p must be a norm in \[1, inf\]"),
    (bad(label_noise=1.5), r"label_noise must be a fraction in \[0, 1\]"),
    (bad(init_from="/nowhere"), "init_from loads EfficientNet, ViT and Mixer checkpoints; "
     "WideResnet is none of them"),
    (bad(model_name="efficientnet-mini", init_from="/nowhere"), "No checkpoint at /nowhere"),
])
def test_bad_input_is_one_line_before_anything_is_written(config, message, tmp_path):
  with pytest.raises(UsageError, match=message) as error:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(error.value)
  assert not (tmp_path / "run").exists()


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
  config = bad(dataset="cifar10", data_dir=str(tmp_path / "empty"))
  with pytest.raises(
      UsageError, match=rf"TFDS dataset 'cifar10' is not prepared in "
      rf"{tmp_path / 'empty'}: run `tfds build cifar10"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_label_noise_on_a_streamed_dataset_is_refused(tmp_path):
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(
        UsageError, match="label_noise needs an in-memory dataset such as "
        "cifar10, not imagenet"):
      loop.train_and_evaluate(bad(dataset="imagenet", label_noise=0.2), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_bug_is_not_a_usage_error(tmp_path, monkeypatch):
  """Only validation raises UsageError: a failure in the loop keeps its type and traceback,
  and the checkpoint manager is closed on the way out."""
  closed = []
  real_manager = checkpoints.make_manager

  def manager(*args, **kwargs):
    made = real_manager(*args, **kwargs)
    real_close = made.close
    made.close = lambda: closed.append(True) or real_close()
    return made

  def broken_step(*args, **kwargs):
    raise ZeroDivisionError("a bug in the step")

  monkeypatch.setattr(checkpoints, "make_manager", manager)
  monkeypatch.setattr(run_setup.steps, "make_train_step", lambda *args, **kwargs: broken_step)
  with pytest.raises(ZeroDivisionError, match="a bug in the step"):
    loop.train_and_evaluate(bad(), str(tmp_path / "run"))
  assert closed == [True]


def test_the_initial_weights_follow_init_seed_else_the_seed(digits, tmp_path):
  """The official code initialised from PRNGKey(0) whatever --run_seed
  (models/load_model.py:116): init_seed=0. Unset, each seed initialises its own weights, as
  the paper's independent runs (Sec. 3.1)."""
  def initial(**fields):
    config = tiny_config(dataset="digits", batch_size=16, **fields)
    return run_setup.set_up(config, str(tmp_path)).state.params

  seed_0 = initial(seed=0)
  assert max_abs_diff(initial(seed=3, init_seed=0), seed_0) == 0
  assert max_abs_diff(initial(seed=3), seed_0) > 0.01
