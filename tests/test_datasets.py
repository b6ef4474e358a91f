"""Every dataset under tfds.testing.mock_data, at a model's resolution, through the loop's
pipeline calls; the JPEG stream's resume; one SAM run on ImageNet with RandAugment + mixup."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import features as tfds_features
from tensorflow_datasets.testing import mocking

from conftest import tiny_config
from sam_jax import loop
from sam_jax.data import image_ops, loading, pipeline
from sam_jax.data.augmentation import Augmentation
from sam_jax.data.datasets import DATASETS, get_dataset_info
from sam_jax.errors import UsageError
from sam_jax.models import get_model, input_resolution

NUM_EXAMPLES = 12  # per split, whatever the split


@pytest.fixture
def mock_tfds(monkeypatch):
  """mock_data, with ordered bounding boxes: TFDS draws the four coordinates independently,
  so cars196, oxford_iiit_pet and caltech_birds2011 fail to encode (ymin > ymax)."""
  draw = mocking.RandomFakeGenerator._generate_random_obj

  def ordered_boxes(self, feature, tensor_info, rng):
    value = draw(self, feature, tensor_info, rng)
    if isinstance(feature, tfds_features.BBoxFeature):
      value = np.concatenate([np.minimum(value[:2], value[2:]), np.maximum(value[:2], value[2:])])
    return value

  monkeypatch.setattr(mocking.RandomFakeGenerator, "_generate_random_obj", ordered_boxes)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def load(info, use_test_set=True):
  train, test = loading.split_names(info, use_test_set)
  return [loading.load_split(info, loading.process_split(s), None) for s in (train, test)]


def test_validation_splits_are_the_originals():
  # google-research/sam sam_jax/datasets/dataset_source.py:195-196, 269-270 and 318-321.
  expected = {
      "cifar10": ("train[:90%]", "train[90%:]"),  # 45,000 of 50,000
      "fashion_mnist": ("train[:90%]", "train[90%:]"),  # 54,000 of 60,000
      "svhn": ("train[:65929]+extra", "train[65929:]")
  }
  for name, splits in expected.items():
    assert loading.split_names(get_dataset_info(name), use_test_set=False) == splits
  assert loading.split_names(get_dataset_info("svhn"), True) == ("train+extra", "test")


@pytest.mark.parametrize("resize_method", ["bicubic", "bicubic_tf1"])
@pytest.mark.parametrize("name", [n for n in DATASETS if n != "digits"])
def test_every_dataset_loads_at_the_model_resolution(name, resize_method, mock_tfds):
  info = get_dataset_info(name)
  size = input_resolution(get_model("efficientnet-b0", info.num_classes))  # 224
  train, test = load(info)
  augmentation = Augmentation(image="basic", batch="mixcut")
  batch = next(
      pipeline.train_batches(info, train, 4, seed=0, augmentation=augmentation, image_size=size,
                             resize_method=resize_method, shuffle_buffer=5))
  assert batch["image"].shape == (4, size, size, info.image_shape[-1])
  assert batch["image"].dtype == np.float32 and np.isfinite(batch["image"]).all()
  assert batch["label"].shape == (4, info.num_classes)  # mixup's soft labels
  np.testing.assert_allclose(batch["label"].sum(-1), 1.0, rtol=1e-6)
  evaluated = list(
      pipeline.eval_batches(info, test, 5, image_size=size, resize_method=resize_method))
  mask = np.concatenate([b["mask"] for b in evaluated])
  assert mask.sum() == loading.num_examples(test) > 0 and len(mask) % 5 == 0
  assert evaluated[0]["image"].shape == (5, size, size, info.image_shape[-1])
  labels = np.concatenate([b["label"] for b in evaluated])
  assert labels.min() >= 0 and labels.max() < info.num_classes


def test_the_jpeg_stream_depends_on_the_seed_only_and_resumes(mock_tfds):
  info = get_dataset_info("oxford_flowers102")
  train, _ = load(info)

  def stream(seed, start_step=0):
    return pipeline.train_batches(info, train, 5, seed=seed, start_step=start_step,
                                  augmentation=Augmentation(image="basic"), image_size=32)

  first = [b for _, b in zip(range(4), stream(1))]  # 20 examples: past the first epoch
  again = [b for _, b in zip(range(4), stream(1))]
  resumed = [b for _, b in zip(range(2), stream(1, start_step=2))]
  for got, want in zip(again + resumed, first + first[2:]):
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])
  other = next(stream(2))
  assert not np.array_equal(other["image"], first[0]["image"])


@pytest.mark.slow
def test_sam_on_imagenet_with_randaugment_and_mixup_through_the_loop(mock_tfds, tmp_path):
  config = tiny_config(
      dataset="imagenet",
      num_epochs=1,
      batch_size=8,
      image_size=32,  # crops of 32 instead of 224, for speed
      image_level_augmentations="randaugment",
      batch_level_augmentations="mixup",
      label_smoothing=0.1)
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["steps"] == 1 and results["test_examples"] == NUM_EXAMPLES
  # The smoothed targets put a / K on every class: another loss than the plain one.
  assert np.isfinite(results["test_loss"]) and results["test_smoothed_loss"] != results["test_loss"]


def test_bad_augmentation_choices_are_one_line_errors():
  fashion = get_dataset_info("fashion_mnist")
  with pytest.raises(UsageError, match="No AutoAugment policy was learned on fashion_mnist"):
    Augmentation(image="autoaugment").check(fashion)
  Augmentation(image="autoaugment", autoaugment_policy="svhn").check(fashion)
  with pytest.raises(UsageError, match="Unknown dataset 'imagenet21k'"):
    get_dataset_info("imagenet21k")


def test_minus_one_to_one_maps_pixels_linearly_onto_the_interval():
  for name in ("cifar10", "imagenet", "digits"):
    info = get_dataset_info(name, "minus_one_to_one")
    pixels = tf.constant([[[0] * len(info.mean), [255] * len(info.mean)]], tf.uint8)
    np.testing.assert_allclose(
        image_ops.normalize(pixels, info).numpy(),
        [[[-1.0] * len(info.mean), [1.0] * len(info.mean)]], atol=1e-6)
  assert get_dataset_info("cifar10").mean[0] == 0.49139968  # the default unchanged
