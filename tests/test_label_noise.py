"""Symmetric label noise: its rate and its determinism (test_loop: only training labels
change in a run)."""

import numpy as np
import pytest

from sam_jax.data import label_noise
from sam_jax.errors import UsageError


@pytest.fixture(scope="module")
def examples():
  rng = np.random.default_rng(0)
  return {
      "image": rng.integers(0, 256, (50_000, 8, 8, 3), dtype=np.uint8),
      "label": rng.integers(0, 10, 50_000).astype(np.int32)
  }


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 0.8])
def test_realised_rate_is_the_asked_rate_and_flips_go_to_other_classes(examples, rate):
  noisy, realised = label_noise.symmetric_noise(examples, rate, 10, seed=0)
  changed = noisy["label"] != examples["label"]
  assert abs(realised - rate) < 0.01 and realised == changed.mean()
  assert noisy["label"].dtype == np.int32 and set(np.unique(noisy["label"])) <= set(range(10))
  # The new label is uniform over the 9 other classes: offsets 1..9 equally often.
  offsets = (noisy["label"] - examples["label"])[changed] % 10
  counts = np.bincount(offsets, minlength=10)
  assert counts[0] == 0 and np.all(np.abs(counts[1:] / changed.sum() - 1 / 9) < 0.01)
  np.testing.assert_array_equal(noisy["image"], examples["image"])


@pytest.mark.parametrize("rate", [0.4, 1.0])
def test_the_keep_possible_convention_redraws_uniformly_over_all_classes(examples, rate):
  noisy, realised = label_noise.symmetric_noise(examples, rate, 10, seed=0, keep_possible=True)
  changed = noisy["label"] != examples["label"]
  assert realised == changed.mean() and abs(realised - rate * 0.9) < 0.01
  if rate == 1.0:  # every label redrawn: offsets 0..9 (0 = kept) equally often
    offsets = (noisy["label"] - examples["label"]) % 10
    assert np.all(np.abs(np.bincount(offsets, minlength=10) / 50_000 - 0.1) < 0.006)
  default, _ = label_noise.symmetric_noise(examples, rate, 10, seed=0)
  same_examples = default["label"] == examples["label"]  # the same examples are redrawn
  assert np.all(noisy["label"][same_examples] == examples["label"][same_examples])


def test_noise_is_a_function_of_seed_and_image_not_of_order(examples):
  first, _ = label_noise.symmetric_noise(examples, 0.4, 10, seed=3)
  again, _ = label_noise.symmetric_noise(examples, 0.4, 10, seed=3)
  np.testing.assert_array_equal(first["label"], again["label"])
  order = np.random.default_rng(1).permutation(50_000)[:20_000]  # another process's share
  part, _ = label_noise.symmetric_noise({k: v[order] for k, v in examples.items()}, 0.4, 10, seed=3)
  np.testing.assert_array_equal(part["label"], first["label"][order])
  other, _ = label_noise.symmetric_noise(examples, 0.4, 10, seed=4)
  assert (other["label"] != first["label"]).mean() > 0.3


def test_a_rate_outside_zero_one_is_a_clear_error(examples):
  with pytest.raises(UsageError, match="label_noise must be a fraction in"):
    label_noise.symmetric_noise(examples, 1.5, 10, seed=0)
