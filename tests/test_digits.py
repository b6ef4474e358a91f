"""Tests for the offline TFDS `digits` builder against scikit-learn's own copy of the data."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn import datasets as sk_datasets
from sklearn import model_selection

import sam_jax.data.digits  # noqa: F401  (registers the "digits" builder)

NUM_EXAMPLES = 1797
SPLIT_SIZES = {"train": 1437, "test": 360}


def _expected_images() -> tuple[np.ndarray, np.ndarray]:
  """sklearn's digits rescaled here, independently of the builder, to uint8 (N, 8, 8, 1)."""
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)[..., None]
  return images, digits.target


def _multiset(images: np.ndarray, labels: np.ndarray) -> collections.Counter:
  """Counts of (image bytes, label) pairs."""
  return collections.Counter((img.tobytes(), int(lab)) for img, lab in zip(images, labels))


@pytest.fixture
def prepared(tmp_path) -> tuple[tfds.core.DatasetBuilder, dict[str, dict[str, np.ndarray]]]:
  """Prepares `digits` in a fresh data_dir and reads both splits as whole numpy arrays."""
  builder = tfds.builder("digits", data_dir=tmp_path)
  builder.download_and_prepare()
  splits = {
      name: tfds.as_numpy(builder.as_dataset(split=name, batch_size=-1)) for name in SPLIT_SIZES
  }
  return builder, splits


def test_split_sizes(prepared):
  builder, splits = prepared
  for name, size in SPLIT_SIZES.items():
    assert builder.info.splits[name].num_examples == size
    assert len(splits[name]["label"]) == size
    assert len(splits[name]["image"]) == size
  assert sum(len(s["label"]) for s in splits.values()) == NUM_EXAMPLES


def test_examples_are_sklearns_rescaled(prepared):
  _, splits = prepared
  images, labels = _expected_images()
  got = _multiset(
      np.concatenate([splits["train"]["image"], splits["test"]["image"]]),
      np.concatenate([splits["train"]["label"], splits["test"]["label"]]))
  assert got == _multiset(images, labels)


def test_no_leak_beyond_sklearns_duplicates(prepared):
  _, splits = prepared
  images, _ = _expected_images()
  total = collections.Counter(img.tobytes() for img in images)
  train = collections.Counter(img.tobytes() for img in splits["train"]["image"])
  test = collections.Counter(img.tobytes() for img in splits["test"]["image"])
  for key in train.keys() & test.keys():
    assert train[key] + test[key] <= total[key]


def test_test_split_is_the_fixed_stratified_split(prepared):
  _, splits = prepared
  images, labels = _expected_images()
  _, test_idx = model_selection.train_test_split(
      np.arange(NUM_EXAMPLES), test_size=0.2, stratify=labels, random_state=0)
  assert _multiset(splits["test"]["image"],
                   splits["test"]["label"]) == _multiset(images[test_idx], labels[test_idx])


def test_test_split_is_stratified(prepared):
  _, splits = prepared
  _, labels = _expected_images()
  totals = np.bincount(labels, minlength=10)
  in_test = np.bincount(splits["test"]["label"], minlength=10)
  assert in_test.sum() == SPLIT_SIZES["test"]
  for c in range(10):
    assert abs(in_test[c] - 0.2 * totals[c]) <= 1, (c, in_test[c], totals[c])


def test_features(prepared):
  builder, splits = prepared
  assert builder.info.features["label"].num_classes == 10
  assert str(builder.info.version) == "1.0.0"
  for split in splits.values():
    image, label = split["image"], split["label"]
    assert image.dtype == np.uint8
    assert image.shape[1:] == (8, 8, 1)
    assert label.min() >= 0 and label.max() <= 9
  assert max(int(s["image"].max()) for s in splits.values()) == 255
  assert min(int(s["image"].min()) for s in splits.values()) == 0


def test_tfds_load_offline(tmp_path):
  ds = tfds.load("digits", data_dir=tmp_path, split="test", download=True, as_supervised=True,
                 batch_size=-1)
  image, label = tfds.as_numpy(ds)
  assert image.shape == (360, 8, 8, 1) and label.shape == (360,)
