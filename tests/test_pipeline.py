"""Input pipelines: per-process slicing, masked evaluation, resumable order, augmentations."""

import collections

import numpy as np
import pytest

from sam_jax.data import augmentation, image_ops, loading, pipeline
from sam_jax.data.augmentation import Augmentation
from sam_jax.data.datasets import get_dataset_info
from sam_jax.data.tf_cpu import tf
from sam_jax.errors import UsageError

DIGITS = get_dataset_info("digits")


def as_multiset(examples):
  return collections.Counter(
      (img.tobytes(), int(lab)) for img, lab in zip(examples["image"], examples["label"]))


@pytest.mark.parametrize("use_test_set", [True, False])
def test_two_processes_read_each_split_exactly_once(digits, use_test_set):
  for split in loading.split_names(DIGITS, use_test_set):
    whole = loading.load_split(DIGITS, loading.process_split(split, 0, 1), None)
    parts = [loading.load_split(DIGITS, loading.process_split(split, i, 2), None) for i in range(2)]
    assert abs(len(parts[0]["label"]) - len(parts[1]["label"])) <= 1
    assert as_multiset(parts[0]) + as_multiset(parts[1]) == as_multiset(whole)


def test_validation_mode_holds_out_ten_percent_of_train(digits):
  train, held_out = loading.split_names(DIGITS, use_test_set=False)
  full = digits["train"]
  a = loading.load_split(DIGITS, train, None)
  b = loading.load_split(DIGITS, held_out, None)
  assert len(b["label"]) == round(0.1 * len(full["label"]))
  assert as_multiset(a) + as_multiset(b) == as_multiset(full)
  assert not set(as_multiset(a)) & set(as_multiset(b))


def test_eval_batches_score_every_example_once_with_a_mask(digits):
  test = digits["test"]
  batches = list(pipeline.eval_batches(DIGITS, test, 64))
  assert all(len(b["label"]) == 64 for b in batches) and len(batches) == 6  # 360 = 5*64 + 40
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 360 and np.all(mask[:360] == 1) and np.all(mask[360:] == 0)
  images = np.concatenate([b["image"] for b in batches])[:360]
  expected = (test["image"] / 255.0 - DIGITS.mean[0]) / DIGITS.std[0]
  np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)


def test_training_order_is_a_function_of_seed_and_step(digits):
  train = digits["train"]
  cutout = Augmentation(batch="cutout", cutout_length=4)  # 16 would blank the 8x8 digits
  stream = pipeline.train_batches(DIGITS, train, 479, seed=3, augmentation=cutout)
  first = [next(stream) for _ in range(5)]
  resumed = pipeline.train_batches(DIGITS, train, 479, seed=3, start_step=3, augmentation=cutout)
  for expected in first[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["label"], expected["label"])
  other_seed = next(pipeline.train_batches(DIGITS, train, 479, seed=4))
  assert not np.array_equal(other_seed["label"], first[0]["label"])


def test_each_epoch_is_a_permutation_of_the_training_set(digits):
  train = digits["train"]  # 1437 = 3 x 479
  stream = pipeline.train_batches(DIGITS, train, 479, seed=0,
                                  augmentation=Augmentation(image="none"))
  for _ in range(2):  # epochs 0 and 1, each a different permutation
    epoch = [next(stream) for _ in range(3)]
    labels = np.concatenate([b["label"] for b in epoch])
    assert collections.Counter(labels.tolist()) == collections.Counter(train["label"].tolist())
    images = np.concatenate([b["image"] for b in epoch])
    expected = (train["image"] / 255.0 - DIGITS.mean[0]) / DIGITS.std[0]
    assert (collections.Counter(np.round(i, 4).tobytes() for i in images) == collections.Counter(
        np.round(i, 4).tobytes() for i in expected.astype(np.float32)))


@pytest.mark.parametrize("dataset", ["cifar10", "digits"])
def test_crop_moves_a_marked_pixel_by_at_most_the_padding_and_flips_half(dataset):
  info = get_dataset_info(dataset)
  pad, width = info.crop_padding, info.image_shape[1]
  image = np.zeros(info.image_shape, np.uint8)
  # Not reflected into the padding; its mirror image, column pad + 1, out of the crop's reach.
  row, col = info.image_shape[0] // 2, width - 2 - pad
  image[row, col] = 255
  offsets, flips = set(), 0
  for i in range(40):
    out = image_ops.crop_and_flip(tf.constant(image), tf.constant([0, i], tf.int64), info).numpy()
    assert out.dtype == np.uint8 and out.shape == image.shape
    (ys, xs) = np.nonzero(out[..., 0] == 255)
    assert len(ys) == 1
    flipped = abs(xs[0] - (pad + 1)) <= pad
    x = width - 1 - xs[0] if flipped else xs[0]
    assert abs(ys[0] - row) <= pad and abs(x - col) <= pad
    offsets.add((ys[0] - row, x - col))
    flips += flipped
  assert len(offsets) > 3  # it does move
  # Half the images flip where the dataset flips (the original flips SVHN too), none
  # elsewhere; 40 fair coins land outside 8..32 with probability 2e-5.
  assert 8 <= flips <= 32 if info.flip else flips == 0


def test_cutout_zeroes_one_clipped_square():
  images = tf.ones((30, 32, 32, 3))
  sizes = []
  for out in image_ops.cutout(images, tf.constant([1, 2], tf.int64), 16, per_example=True):
    zero = np.all(out.numpy() == 0, axis=-1)
    ys, xs = np.nonzero(zero)
    assert zero.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a rectangle
    assert ys.max() - ys.min() < 16 and xs.max() - xs.min() < 16
    sizes.append(zero.sum())
  assert max(sizes) == 256 and min(sizes) < 256  # whole inside, and clipped at edges


def test_a_cutout_that_blanks_every_image_whole_is_refused():
  # The rule, on the op itself: a side of 15 blanks any 8x8 image wherever it is centred;
  # 14 leaves some image a pixel.
  images = tf.ones((200, 8, 8, 1))
  blanked = [
      image_ops.cutout(images, tf.constant([3, 4], tf.int64), length, per_example=True)
      for length in (15, 14)
  ]
  assert np.all(blanked[0].numpy() == 0) and not np.all(blanked[1].numpy() == 0)
  digits = get_dataset_info("digits")
  with pytest.raises(
      UsageError, match=r"^--config.cutout_length=16 blanks every 8x8 digits "
      r"image whole .*: use a length below 15, e.g. 4\.$"):
    Augmentation(batch="cutout", cutout_length=16).check(digits)
  with pytest.raises(UsageError, match="cutout_length=15 blanks"):
    Augmentation(batch="mixcut", cutout_length=15).check(digits)
  Augmentation(batch="cutout", cutout_length=14).check(digits)
  Augmentation(batch="none", cutout_length=16).check(digits)  # no cutout, no complaint
  Augmentation(batch="cutout", cutout_length=448).check(get_dataset_info("imagenet"))  # any size


@pytest.mark.parametrize("cutout_mask", ["batch", "example"])
def test_cutout_mask_is_shared_by_the_batch_or_drawn_per_example(digits, cutout_mask):
  train = digits["train"]
  ones = {"image": np.full_like(train["image"], 255), "label": train["label"]}
  augmentation = Augmentation(image="none", batch="cutout", cutout_length=4,
                              cutout_mask=cutout_mask)
  stream = pipeline.train_batches(DIGITS, ones, 64, seed=0, augmentation=augmentation)
  masks = [np.all(next(stream)["image"] == 0, axis=-1) for _ in range(2)]
  assert all(m.any(axis=(1, 2)).all() for m in masks)  # every image lost a square
  same_in_batch = all((m == m[:1]).all() for m in masks)
  assert same_in_batch == (cutout_mask == "batch")
  assert not (masks[0][0] == masks[1][0]).all()  # a new square for the next batch


def test_normalisation_uses_the_dataset_constants():
  info = get_dataset_info("cifar100")
  out = image_ops.normalize(tf.fill((1, 1, 3), tf.constant(128, tf.uint8)), info).numpy()
  np.testing.assert_allclose(out[0, 0], (128 / 255 - np.array(info.mean)) / np.array(info.std),
                             atol=1e-6)


def test_unknown_dataset_and_missing_data_are_clear_errors(tmp_path):
  with pytest.raises(UsageError, match="Unknown dataset 'cifar11': choose one of"):
    get_dataset_info("cifar11")
  with pytest.raises(UsageError, match="TFDS dataset 'cifar10' is not prepared in"):
    loading.load_split(get_dataset_info("cifar10"), "test", str(tmp_path))


def test_digits_constants_are_the_training_set_statistics(digits):
  train = digits["train"]["image"] / 255.0
  np.testing.assert_allclose(DIGITS.mean[0], train.mean(), atol=1e-4)
  np.testing.assert_allclose(DIGITS.std[0], train.std(), atol=1e-4)


def test_no_two_augmentation_streams_share_a_key(monkeypatch):
  """Every random draw of an example (crop, flip, policy) has its own key, for every
  (seed, example): no `key + 1` arithmetic that makes seed s's flip seed s+1's crop."""
  seen = []

  def recorder(stream, result):
    def record(image, *args, seed=None, **kwargs):
      seen.append((stream, tuple((seed if seed is not None else args[-1]).numpy())))
      return result(image)

    return record

  monkeypatch.setattr(tf.image, "stateless_random_crop",
                      recorder("crop", lambda image: image[:32, :32]))
  monkeypatch.setattr(tf.image, "stateless_random_flip_left_right",
                      recorder("flip", lambda image: image))
  monkeypatch.setattr(augmentation.autoaugment, "autoaugment",
                      lambda image, key, *args: recorder("policy", lambda i: i)(image, key))
  info, image = get_dataset_info("cifar10"), tf.zeros((32, 32, 3), tf.uint8)
  aug = Augmentation(image="autoaugment")
  for seed in range(4):
    for index in range(8):
      augmentation.augment_small(image, tf.constant([seed, index], tf.int64), info, aug)
  assert {stream for stream, _ in seen} == {"crop", "flip", "policy"}
  keys = [key for _, key in seen]
  assert len(keys) == 3 * 4 * 8 and len(set(keys)) == len(keys)


def indexed(num):
  """`num` blank digits whose labels are their file positions."""
  return {"image": np.zeros((num, 8, 8, 1), np.uint8), "label": np.arange(num, dtype=np.int32)}


def stream_labels(examples, batches, **options):
  stream = pipeline.train_batches(DIGITS, examples, 50, augmentation=Augmentation(image="none"),
                                  **options)
  return np.concatenate([next(stream)["label"] for _ in range(batches)])


def test_the_original_order_is_the_file_order_through_a_shuffle_buffer():
  """dataset_source.py:116: `self._train_ds.shuffle(50000)` over the split in file order,
  reshuffled every epoch: SVHN's 604,388 examples (train, then extra) through 50,000 places,
  so an example comes out at most 50,000 - 1 places before its position in the files."""
  num, buffer = 1000, 100
  order = stream_labels(indexed(num), 60, seed=0, shuffle_buffer=buffer)  # 3 epochs
  epochs = order.reshape(3, num)
  for epoch in epochs:
    assert sorted(epoch) == list(range(num))  # each epoch, every example once
    assert (epoch - np.arange(num)).max() <= buffer - 1  # never further ahead than the buffer
  assert not np.array_equal(epochs[0], epochs[1])  # a new draw every epoch
  resumed = stream_labels(indexed(num), 25, seed=0, start_step=35, shuffle_buffer=buffer)
  np.testing.assert_array_equal(resumed, order[35 * 50:])  # mid-epoch, as uninterrupted
  other = stream_labels(indexed(num), 20, seed=1, shuffle_buffer=buffer)
  assert not np.array_equal(other, epochs[0])
  # The default, a uniform permutation, takes examples from anywhere in the files.
  permuted = stream_labels(indexed(num), 20, seed=0).reshape(num)
  assert sorted(permuted) == list(range(num)) and (permuted - np.arange(num)).max() > buffer
