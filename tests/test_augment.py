"""AutoAugment/RandAugment ops against Pillow and known images; policies; mixup; crops."""

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from sam_jax.data import autoaugment, image_ops, imagenet, policies
from sam_jax.data.augmentation import Augmentation, augment_streamed
from sam_jax.data.datasets import get_dataset_info
from sam_jax.data.tf_cpu import tf

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)
SEED = tf.constant([3, 4], tf.int64)


def pil(image):
  return Image.fromarray(image)


@pytest.mark.parametrize("name,ours,reference,tolerance", [
    ("equalize", autoaugment.equalize, ImageOps.equalize, 0),
    ("autocontrast", autoaugment.autocontrast, ImageOps.autocontrast, 0),
    ("invert", autoaugment.invert, ImageOps.invert, 0),
    ("posterize 3", lambda x: autoaugment.posterize(x, 3), lambda p: ImageOps.posterize(p, 3), 0),
    ("solarize 100", lambda x: autoaugment.solarize(x, 100), lambda p: ImageOps.solarize(p, 100),
     0),
    ("sharpness 0.3", lambda x: autoaugment.sharpness(x, 0.3),
     lambda p: ImageEnhance.Sharpness(p).enhance(0.3), 1),
    ("sharpness 1.7", lambda x: autoaugment.sharpness(x, 1.7),
     lambda p: ImageEnhance.Sharpness(p).enhance(1.7), 1),
    ("color 0.3", lambda x: autoaugment.color(x, 0.3), lambda p: ImageEnhance.Color(p).enhance(0.3),
     1),
    ("contrast 1.6", lambda x: autoaugment.contrast(x, 1.6),
     lambda p: ImageEnhance.Contrast(p).enhance(1.6), 1),
    ("brightness 0.5", lambda x: autoaugment.brightness(x, 0.5),
     lambda p: ImageEnhance.Brightness(p).enhance(0.5), 1),
])
def test_pixel_ops_match_pillow(name, ours, reference, tolerance):
  low_contrast = (PHOTO // 3 + 60).astype(np.uint8)  # autocontrast has room to stretch
  for image in (PHOTO, low_contrast):
    got = ours(tf.constant(image)).numpy()
    want = np.asarray(reference(pil(image)))
    assert got.dtype == np.uint8 and got.shape == image.shape, name
    assert np.abs(got.astype(int) - want).max() <= tolerance, name


def marked(shape=(16, 16, 3), at=(5, 7)):
  image = np.zeros(shape, np.uint8)
  image[at] = 255
  return image


@pytest.mark.parametrize("k", [-3, 1, 4])
def test_translate_by_k_moves_a_marked_pixel_back_by_k(k):
  # As the original: autoaugment/autoaugment.py:218 translates by [-pixels, 0].
  image = marked()
  left = autoaugment.translate_x(tf.constant(image), float(k)).numpy()
  up = autoaugment.translate_y(tf.constant(image), float(k)).numpy()
  assert left[5, 7 - k, 0] == 255 and (left[..., 0] == 255).sum() == 1
  assert up[5 - k, 7, 0] == 255 and (up[..., 0] == 255).sum() == 1
  uncovered = left[:, -k:] if k > 0 else left[:, :-k]
  assert (uncovered == autoaugment.FILL).all()  # the pixels that came from outside


@pytest.mark.parametrize("channels", [1, 3])
def test_rotations_by_quarter_turns_equal_np_rot90(channels):
  image = RNG.integers(0, 256, (9, 9, channels), dtype=np.uint8)
  for quarter_turns in (1, 2, 3):
    got = autoaugment.rotate(tf.constant(image), 90.0 * quarter_turns).numpy()
    np.testing.assert_array_equal(got, np.rot90(image, quarter_turns))


def test_shear_moves_a_pixel_along_its_row_in_proportion_to_the_row():
  image = marked(at=(10, 8))
  sheared = autoaugment.shear_x(tf.constant(image), 0.2).numpy()  # input x = x + 0.2 y
  ys, xs = np.nonzero(sheared[..., 0] == 255)
  assert list(ys) == [10] and list(xs) == [6]  # 8 - 0.2 * 10
  sheared = autoaugment.shear_y(tf.constant(image), -0.5).numpy()  # input y = y - 0.5 x
  ys, xs = np.nonzero(sheared[..., 0] == 255)
  assert list(ys) == [14] and list(xs) == [8]  # 10 + 0.5 * 8


def test_magnitudes_scale_with_the_image_or_stay_the_originals():
  assert policies.magnitudes("cifar", 32) == policies.Magnitudes(10.0, 10.0, (8, 4))
  scaled = policies.magnitudes("imagenet", 331)
  assert (scaled.translate, 2 * scaled.cutout_pad) == pytest.approx((150, 60))
  assert policies.magnitudes("randaugment", 224).translate == pytest.approx(100)
  # autoaugment/autoaugment.py:621 HParams(cutout_const=100, translate_const=250) for
  # every AutoAugment policy, :645 (cutout_const=40, translate_const=100) for
  # RandAugment; :476 Posterize keeps int(level / 10 * 4) bits.
  for size in (32, 224):
    for policy in ("cifar", "svhn", "imagenet"):
      assert policies.magnitudes(policy, size, faithful=True) == policies.Magnitudes(
          250., 100., (0, 4), faithful=True)
    assert policies.magnitudes("randaugment", size,
                               faithful=True) == policies.Magnitudes(100., 40., (0, 4),
                                                                     faithful=True)
  # The faithful level-9 translate throws a 32x32 image out of the frame; the scaled one not.
  image = tf.constant(PHOTO[:16, :16])
  faithful = autoaugment.apply_op(image, "TranslateX", 9, SEED,
                                  policies.magnitudes("cifar", 32, True))
  scaled = autoaugment.apply_op(image, "TranslateX", 9, SEED, policies.magnitudes("cifar", 16))
  assert (faithful.numpy() == autoaugment.FILL).all()
  assert not (scaled.numpy() == autoaugment.FILL).all()


FAITHFUL = policies.magnitudes("cifar", 32, faithful=True)


@pytest.mark.parametrize("level", range(11))
def test_faithful_ops_give_the_official_outputs(level):
  """numpy transcriptions of google-research/sam's autoaugment/autoaugment.py, per level.

  The three ops where the original is not PIL. (scripts/compare_official_autoaugment.py
  runs all 16 ops side by side with the original file itself.)
  """
  x = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)

  def op(name):
    return autoaugment.apply_op(tf.constant(x), name, level, SEED, FAITHFUL).numpy()

  # Posterize (:185-188) keeps int(level / 10 * 4) bits (:476) by `x >> s << s`, s = 8 -
  # bits; TensorFlow clamps a shift by 8 to 7, so levels 0-2 keep the top bit.
  shift = min(8 - int(level / 10 * 4), 7)
  np.testing.assert_array_equal(op("Posterize"), (x >> shift) << shift)
  # Solarize (:139-143) compares with int(level / 10 * 256) (:477) as a uint8: at level
  # 10 that is 0, and every pixel is inverted.
  threshold = int(level / 10 * 256) % 256
  np.testing.assert_array_equal(op("Solarize"), np.where(x < threshold, x, 255 - x))
  # Contrast (:162-176) blends (:44-84, float32) with the uint8 constant
  # sum(histogram) / 256 = H * W / 256, where PIL uses the mean gray level.
  factor = np.float32(level / 10 * 1.8 + 0.1)
  gray = np.float32(np.uint8(32 * 32 / 256))
  blended = gray + factor * (x.astype(np.float32) - gray)
  np.testing.assert_array_equal(op("Contrast"), np.clip(blended, 0, 255).astype(np.uint8))
  # Cutout (:88-136) fills rows and columns centre +- pad, pad = int(level / 10 * 100)
  # (:485): from level 4 on (pad 40) it covers a 32x32 image whole.
  pad = int(level / 10 * 100)
  filled = (op("Cutout") == autoaugment.FILL).all(-1)
  cy, cx = (
      int(tf.random.stateless_uniform([], image_ops.fold_in(SEED, i), 0, 32, tf.int32))
      for i in (0, 1))
  rows, cols = np.arange(32)[:, None], np.arange(32)[None, :]
  square = (abs(rows - cy + 0.5) < pad) & (abs(cols - cx + 0.5) < pad)
  np.testing.assert_array_equal(filled, square | (x == autoaugment.FILL).all(-1))
  assert square.all() or level < 4


@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_of_every_policy_keeps_shape_and_dtype(channels):
  # Low contrast, so that AutoContrast and Equalize have something to do.
  image = tf.constant(RNG.integers(20, 236, (32, 32, channels), dtype=np.uint8))
  mags = policies.magnitudes("cifar", 32)
  ops = {(name, level)
         for policy in policies.POLICIES.values()
         for sub_policy in policy
         for name, _, level in sub_policy}
  ops |= {(name, 9) for name in policies.RANDAUGMENT_OPS}

  def identity(name, level):  # level 0 of a geometric op, factor 1.0 (level 5), 8 bits...
    return ((level == 0 and name
             in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd"))
            or (name, level) == ("Solarize", 10) or (name == "Posterize" and level < 3)
            or (level == 5 and name in ("Color", "Contrast", "Brightness", "Sharpness"))
            or (name == "Color" and channels == 1))

  for name, level in sorted(ops):
    out = autoaugment.apply_op(image, name, level, SEED, mags)
    assert out.dtype == tf.uint8 and out.shape == image.shape, (name, level)
    assert np.array_equal(out.numpy(), image.numpy()) == identity(name, level), (name, level)


@pytest.mark.slow
def test_policies_have_the_published_sizes_and_run_end_to_end():
  assert {
      k: len(v) for k, v in policies.POLICIES.items()
  } == {
      "cifar": 95,
      "svhn": 25,
      "imagenet": 25
  }
  image = tf.constant(PHOTO)
  for policy in policies.POLICIES:
    run = tf.function(
        lambda s, p=policy: autoaugment.autoaugment(image, s, p, policies.magnitudes(p, 24)))
    outs = [run(tf.constant([0, i], tf.int64)).numpy() for i in range(40)]
    assert all(o.dtype == np.uint8 and o.shape == PHOTO.shape for o in outs)
    assert len({o.tobytes() for o in outs}) > 10, policy  # different sub-policies and draws
    np.testing.assert_array_equal(run(tf.constant([0, 5], tf.int64)), outs[5])  # stateless


def test_randaugment_applies_num_layers_ops_at_the_magnitude():
  image = tf.constant(PHOTO)
  mags = policies.magnitudes("randaugment", 24)
  assert np.array_equal(autoaugment.randaugment(image, SEED, 0, 9, mags), PHOTO)
  one = autoaugment.randaugment(image, SEED, 1, 9, mags).numpy()
  layer_key = image_ops.fold_in(SEED, 0)
  choice = tf.random.stateless_uniform([], image_ops.fold_in(layer_key, 0), 0,
                                       len(policies.RANDAUGMENT_OPS), tf.int32)
  expected = autoaugment.apply_op(image, policies.RANDAUGMENT_OPS[int(choice)], 9,
                                  image_ops.fold_in(layer_key, 1), mags)
  np.testing.assert_array_equal(one, expected)
  outs = {
      autoaugment.randaugment(image, tf.constant([0, i], tf.int64), 2, 9, mags).numpy().tobytes()
      for i in range(20)
  }
  assert len(outs) > 10


def test_mixup_mixes_each_example_with_the_reversed_batch():
  images = tf.constant(RNG.normal(size=(6, 4, 4, 3)), tf.float32)
  labels = tf.one_hot([0, 1, 2, 3, 4, 5], 6)
  weights = []
  for i in range(400):
    mixed, soft = image_ops.mixup(images, labels, tf.constant([1, i], tf.int64), alpha=1.0)
    w = float(soft[0, 0])
    assert w >= 0.5 and float(soft[0, 5]) == pytest.approx(1 - w)
    np.testing.assert_allclose(soft.numpy().sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed, w * images + (1 - w) * images[::-1], rtol=1e-5, atol=1e-6)
    weights.append(w)
  # Beta(1, 1) is uniform, so max(w, 1 - w) is uniform on [0.5, 1]: mean 0.75, sd 0.144.
  assert abs(np.mean(weights) - 0.75) < 0.02 and min(weights) < 0.55 and max(weights) > 0.95


def encode(image, fmt):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=fmt)
  return tf.constant(buffer.getvalue())


def test_center_crop_takes_size_over_size_plus_32_of_the_shorter_side():
  assert imagenet.center_window(tf.constant([256, 320]), 224).numpy().tolist() == [16, 48, 224, 224]
  image = RNG.integers(0, 256, (64, 80, 3), dtype=np.uint8)
  got = imagenet.center_crop(encode(image, "PNG"), 32).numpy()  # 64 * 32/64 = 32: no resize
  np.testing.assert_array_equal(got, image[16:48, 24:56])
  jpeg = imagenet.center_crop(encode(image, "JPEG"), 32).numpy()
  assert jpeg.shape == (32, 32, 3) and jpeg.dtype == np.uint8


def test_inception_windows_cover_8_to_100_percent_with_aspect_3_4_to_4_3():
  shape = tf.constant([300, 400])
  areas, aspects = [], []
  for i in range(300):
    y, x, h, w = imagenet.inception_window(shape, tf.constant([0, i], tf.int64), 224).numpy()
    assert 0 <= y and y + h <= 300 and 0 <= x and x + w <= 400
    areas.append(h * w / (300 * 400))
    aspects.append(w / h)
  assert min(areas) >= 0.08 - 0.01 and max(areas) > 0.8 and min(areas) < 0.2
  assert min(aspects) >= 0.74 and max(aspects) <= 1.34
  jpeg = encode(RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8), "JPEG")
  crop = imagenet.inception_crop(jpeg, SEED, 64).numpy()
  assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8


def tf1_resize(images, size):
  """The official pipelines' resize (dataset_source.py:67, dataset_source_imagenet.py:107),
  the TF1 op itself."""
  return tf.compat.v1.image.resize_bicubic(images, [size, size]).numpy()


@pytest.mark.parametrize("size", [5, 40])  # down and up (CIFAR to a model's resolution)
def test_the_tf1_resize_is_the_originals_op(size):
  images = RNG.integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
  normalised = tf.constant((images / 255.0 - 0.5) / 0.25, tf.float32)  # CIFAR: after normalising
  want = tf1_resize(normalised, size)
  np.testing.assert_array_equal(image_ops.resize(normalised, size, "bicubic_tf1"), want)
  np.testing.assert_array_equal(image_ops.resize(normalised[1], size, "bicubic_tf1"), want[1])
  # Another sampling grid and cubic than tf.image.resize's, and unclipped: it rings.
  assert np.abs(image_ops.resize(normalised, size, "bicubic").numpy() - want).max() > 0.1
  assert tf1_resize(tf.constant(images), 40).min() < 0


def test_tf1_crops_stay_float_and_are_truncated_to_uint8_before_a_policy():
  """dataset_source_imagenet.py:132-133, :155 resize the decoded window; :193 casts it to
  uint8 for RandAugment; without a policy the float32 crop is normalised as it is."""
  image = RNG.integers(0, 256, (64, 80, 3), dtype=np.uint8)
  png = encode(image, "PNG")
  window = imagenet.center_window(tf.constant([64, 80]), 24)  # 64 * 24/56: resized to 24
  want = tf1_resize(
      tf.constant(image)[None, window[0]:window[0] + window[2], window[1]:window[1] + window[3]],
      24)[0]
  got = imagenet.center_crop(png, 24, "bicubic_tf1").numpy()
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, want)
  assert want.min() < 0 or want.max() > 255  # the overshoot the original kept
  info = get_dataset_info("imagenet")
  no_policy = Augmentation(image="randaugment", randaug_num_layers=0)
  out = augment_streamed(png, SEED, info, no_policy, 24, "bicubic_tf1").numpy()
  crop = imagenet.inception_crop(png, SEED, 24, "bicubic_tf1")
  truncated = tf.cast(crop, tf.uint8).numpy()  # TF's cast: -3.7 -> 253, 284.4 -> 28
  assert out.dtype == np.uint8
  assert np.array_equal(out, truncated) or np.array_equal(out, truncated[:, ::-1])
  assert not np.array_equal(truncated, np.clip(np.round(crop.numpy()), 0, 255))
