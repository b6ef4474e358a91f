"""Input pipelines: per-process slicing, masked evaluation, resumable order, augmentations."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from sam_jax.data import pipeline

DIGITS = pipeline.get_dataset_info("digits")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def as_multiset(examples):
  return collections.Counter(
      (img.tobytes(), int(lab)) for img, lab in zip(examples["image"], examples["label"]))


@pytest.mark.parametrize("use_test_set", [True, False])
def test_two_processes_read_each_split_exactly_once(data_dir, use_test_set):
  for split in pipeline.split_names(DIGITS, use_test_set):
    whole = pipeline.load_split(DIGITS, pipeline.process_split(split, 0, 1), data_dir)
    parts = [pipeline.load_split(DIGITS, pipeline.process_split(split, i, 2), data_dir)
             for i in range(2)]
    assert abs(len(parts[0]["label"]) - len(parts[1]["label"])) <= 1
    assert as_multiset(parts[0]) + as_multiset(parts[1]) == as_multiset(whole)


def test_validation_mode_holds_out_ten_percent_of_train(data_dir):
  train, held_out = pipeline.split_names(DIGITS, use_test_set=False)
  full = pipeline.load_split(DIGITS, "train", data_dir)
  a = pipeline.load_split(DIGITS, train, data_dir)
  b = pipeline.load_split(DIGITS, held_out, data_dir)
  assert len(b["label"]) == round(0.1 * len(full["label"]))
  assert as_multiset(a) + as_multiset(b) == as_multiset(full)
  assert not set(as_multiset(a)) & set(as_multiset(b))


def test_eval_batches_score_every_example_once_with_a_mask(data_dir):
  test = pipeline.load_split(DIGITS, "test", data_dir)
  batches = list(pipeline.eval_batches(DIGITS, test, 64))
  assert all(len(b["label"]) == 64 for b in batches) and len(batches) == 6  # 360 = 5*64 + 40
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 360 and np.all(mask[:360] == 1) and np.all(mask[360:] == 0)
  images = np.concatenate([b["image"] for b in batches])[:360]
  expected = (test["image"] / 255.0 - DIGITS.mean[0]) / DIGITS.std[0]
  np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)


def test_training_order_is_a_function_of_seed_and_step(data_dir):
  train = pipeline.load_split(DIGITS, "train", data_dir)
  cutout = pipeline.Augmentation(batch="cutout")
  stream = pipeline.train_batches(DIGITS, train, 479, seed=3, augmentation=cutout)
  first = [next(stream) for _ in range(5)]
  resumed = pipeline.train_batches(DIGITS, train, 479, seed=3, start_step=3, augmentation=cutout)
  for expected in first[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["label"], expected["label"])
  other_seed = next(pipeline.train_batches(DIGITS, train, 479, seed=4))
  assert not np.array_equal(other_seed["label"], first[0]["label"])


def test_each_epoch_is_a_permutation_of_the_training_set(data_dir):
  train = pipeline.load_split(DIGITS, "train", data_dir)  # 1437 = 3 x 479
  stream = pipeline.train_batches(DIGITS, train, 479, seed=0,
                                  augmentation=pipeline.Augmentation(image="none"))
  for _ in range(2):  # epochs 0 and 1, each a different permutation
    epoch = [next(stream) for _ in range(3)]
    labels = np.concatenate([b["label"] for b in epoch])
    assert collections.Counter(labels.tolist()) == collections.Counter(train["label"].tolist())
    images = np.concatenate([b["image"] for b in epoch])
    expected = (train["image"] / 255.0 - DIGITS.mean[0]) / DIGITS.std[0]
    assert (collections.Counter(np.round(i, 4).tobytes() for i in images)
            == collections.Counter(np.round(i, 4).tobytes() for i in expected.astype(np.float32)))


def test_crop_moves_a_marked_pixel_by_at_most_the_padding_and_keeps_dtype():
  info = pipeline.get_dataset_info("cifar10")
  image = np.zeros((32, 32, 3), np.uint8)
  image[15, 17] = 255
  offsets = set()
  for i in range(40):
    out = pipeline.crop_and_flip(tf.constant(image), tf.constant([0, i], tf.int64), info).numpy()
    assert out.dtype == np.uint8 and out.shape == image.shape
    (ys, xs) = np.nonzero(out[..., 0] == 255)
    assert len(ys) == 1
    x = xs[0] if abs(xs[0] - 17) <= 4 else 31 - xs[0]  # undo a flip
    assert abs(ys[0] - 15) <= 4 and abs(x - 17) <= 4
    offsets.add((ys[0] - 15, x - 17))
  assert len(offsets) > 5  # it does move


def test_cutout_zeroes_one_clipped_square():
  images = tf.ones((30, 32, 32, 3))
  sizes = []
  for out in pipeline.cutout(images, tf.constant([1, 2], tf.int64), 16, per_example=True):
    zero = np.all(out.numpy() == 0, axis=-1)
    ys, xs = np.nonzero(zero)
    assert zero.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a rectangle
    assert ys.max() - ys.min() < 16 and xs.max() - xs.min() < 16
    sizes.append(zero.sum())
  assert max(sizes) == 256 and min(sizes) < 256  # whole inside, and clipped at edges


@pytest.mark.parametrize("cutout_mask", ["batch", "example"])
def test_cutout_mask_is_shared_by_the_batch_or_drawn_per_example(data_dir, cutout_mask):
  train = pipeline.load_split(DIGITS, "train", data_dir)
  ones = {"image": np.full_like(train["image"], 255), "label": train["label"]}
  augmentation = pipeline.Augmentation(image="none", batch="cutout", cutout_length=4,
                                       cutout_mask=cutout_mask)
  stream = pipeline.train_batches(DIGITS, ones, 64, seed=0, augmentation=augmentation)
  masks = [np.all(next(stream)["image"] == 0, axis=-1) for _ in range(2)]
  assert all(m.any(axis=(1, 2)).all() for m in masks)  # every image lost a square
  same_in_batch = all((m == m[:1]).all() for m in masks)
  assert same_in_batch == (cutout_mask == "batch")
  assert not (masks[0][0] == masks[1][0]).all()  # a new square for the next batch


def test_normalisation_uses_the_dataset_constants():
  info = pipeline.get_dataset_info("cifar100")
  out = pipeline.normalize(tf.fill((1, 1, 3), tf.constant(128, tf.uint8)), info).numpy()
  np.testing.assert_allclose(out[0, 0], (128 / 255 - np.array(info.mean)) / np.array(info.std),
                             atol=1e-6)


def test_unknown_dataset_and_missing_data_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="Unknown dataset 'cifar11': choose one of"):
    pipeline.get_dataset_info("cifar11")
  with pytest.raises(FileNotFoundError, match="TFDS dataset 'cifar10' is not prepared in"):
    pipeline.load_split(pipeline.get_dataset_info("cifar10"), "test", str(tmp_path))


def test_digits_constants_are_the_training_set_statistics(data_dir):
  train = pipeline.load_split(DIGITS, "train", data_dir)["image"] / 255.0
  np.testing.assert_allclose(DIGITS.mean[0], train.mean(), atol=1e-4)
  np.testing.assert_allclose(DIGITS.std[0], train.std(), atol=1e-4)
