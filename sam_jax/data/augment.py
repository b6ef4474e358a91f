"""AutoAugment and RandAugment on uint8 images, in core TensorFlow ops (no tf-addons).

AutoAugment (Cubuk et al., 2019, arXiv:1805.09501) picks one of a policy's sub-policies
uniformly and applies its two ops in turn, each with its probability and level 0..10.
RandAugment (Cubuk et al., 2020, arXiv:1909.13719) applies N ops drawn uniformly from 16,
all at magnitude M. Every op maps uint8 [H, W, C] to uint8 [H, W, C] (C = 1 or 3).

Magnitudes. Levels become arguments as in the tensorflow/tpu code the original used,
except for the size-dependent ones. `magnitudes(..., faithful=False)` (our default)
scales translate and cutout to the image: the CIFAR and SVHN policies were learned on
32x32 images with translates of up to 10 px and cutout squares of up to 20 px, the
ImageNet policy with 150 px and 60 px at 331x331, RandAugment with 100 px and 80 px at
224x224; posterize keeps 8..4 bits as in the AutoAugment paper. `faithful=True` is the
original: 250 px translates and 200 px squares for every image size (so a 32x32 image is
often shifted out of the frame), 100/80 px for RandAugment, and 0..4 posterize bits.

Randomness is stateless: every draw comes from a [2] int64 seed, so an image's
augmentation depends only on the run's seed and the image's position in the stream.
"""

import dataclasses
import math

import tensorflow as tf

MAX_LEVEL = 10.0
FILL = 128  # value of pixels uncovered by geometric ops and of AutoAugment's cutout

# (op, probability, level) pairs, from the AutoAugment paper's appendix (the tensorflow/tpu
# transcription the original used): 95 sub-policies for CIFAR-10 (the five best of each
# of the paper's searches), 25 for SVHN, 25 for ImageNet.
CIFAR_POLICY = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)), (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.0, 2)), (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.4, 3)), (("Equalize", 0.7, 5), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 1)), (("TranslateY", 0.8, 9), ("TranslateY", 0.9, 9)),
    (("AutoContrast", 0.8, 0), ("TranslateY", 0.7, 9)), (("TranslateY", 0.2, 7), ("Color", 0.9, 6)),
    (("Equalize", 0.7, 6), ("Color", 0.4, 9)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)), (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)), (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Brightness", 0.3, 7), ("AutoContrast", 0.5, 8)),
    (("AutoContrast", 0.9, 4), ("AutoContrast", 0.5, 6)), (("Solarize", 0.3, 5), ("Equalize", 0.6, 5)),
    (("TranslateY", 0.2, 4), ("Sharpness", 0.3, 3)), (("Brightness", 0.0, 8), ("Color", 0.8, 8)),
    (("Solarize", 0.2, 6), ("Color", 0.8, 6)), (("Solarize", 0.2, 6), ("AutoContrast", 0.8, 1)),
    (("Solarize", 0.4, 1), ("Equalize", 0.6, 5)), (("Brightness", 0.0, 0), ("Solarize", 0.5, 2)),
    (("AutoContrast", 0.9, 5), ("Brightness", 0.5, 3)),
    (("Contrast", 0.7, 5), ("Brightness", 0.0, 2)), (("Solarize", 0.2, 8), ("Solarize", 0.1, 5)),
    (("Contrast", 0.5, 1), ("TranslateY", 0.2, 9)), (("AutoContrast", 0.6, 5), ("TranslateY", 0.0, 9)),
    (("AutoContrast", 0.9, 4), ("Equalize", 0.8, 4)),
    (("Brightness", 0.0, 7), ("Equalize", 0.4, 7)), (("Solarize", 0.2, 5), ("Equalize", 0.7, 5)),
    (("Equalize", 0.6, 8), ("Color", 0.6, 2)), (("Color", 0.3, 7), ("Color", 0.2, 4)),
    (("AutoContrast", 0.5, 2), ("Solarize", 0.7, 2)),
    (("AutoContrast", 0.2, 0), ("Equalize", 0.1, 0)), (("ShearY", 0.6, 5), ("Equalize", 0.6, 5)),
    (("Brightness", 0.9, 3), ("AutoContrast", 0.4, 1)), (("Equalize", 0.8, 8), ("Equalize", 0.7, 7)),
    (("Equalize", 0.7, 7), ("Solarize", 0.5, 0)),
    (("Equalize", 0.8, 4), ("TranslateY", 0.8, 9)), (("TranslateY", 0.8, 9), ("TranslateY", 0.6, 9)),
    (("TranslateY", 0.9, 0), ("TranslateY", 0.5, 9)), (("AutoContrast", 0.5, 3), ("Solarize", 0.3, 4)),
    (("Solarize", 0.5, 3), ("Equalize", 0.4, 4)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("AutoContrast", 0.1, 5), ("Brightness", 0.0, 0)), (("Cutout", 0.2, 4), ("Equalize", 0.1, 1)),
    (("Equalize", 0.7, 7), ("AutoContrast", 0.6, 4)), (("Color", 0.1, 8), ("ShearY", 0.2, 3)),
    (("ShearY", 0.4, 2), ("Rotate", 0.7, 0)),
    (("ShearY", 0.1, 3), ("AutoContrast", 0.9, 5)), (("TranslateY", 0.3, 6), ("Cutout", 0.3, 3)),
    (("Equalize", 0.5, 0), ("Solarize", 0.6, 6)), (("AutoContrast", 0.3, 5), ("Rotate", 0.2, 7)),
    (("Equalize", 0.8, 2), ("Invert", 0.4, 0)),
    (("Equalize", 0.9, 5), ("Color", 0.7, 0)), (("Equalize", 0.1, 1), ("ShearY", 0.1, 3)),
    (("AutoContrast", 0.7, 3), ("Equalize", 0.7, 0)), (("Brightness", 0.5, 1), ("Contrast", 0.1, 7)),
    (("Contrast", 0.1, 4), ("Solarize", 0.6, 5)),
    (("Solarize", 0.2, 3), ("ShearX", 0.0, 0)), (("TranslateX", 0.3, 0), ("TranslateX", 0.6, 0)),
    (("Equalize", 0.5, 9), ("TranslateY", 0.6, 7)), (("ShearX", 0.1, 0), ("Sharpness", 0.5, 1)),
    (("Equalize", 0.8, 6), ("Invert", 0.3, 6)),
    (("AutoContrast", 0.3, 9), ("Cutout", 0.5, 3)), (("ShearX", 0.4, 4), ("AutoContrast", 0.9, 2)),
    (("ShearX", 0.0, 3), ("Posterize", 0.0, 3)), (("Solarize", 0.4, 3), ("Color", 0.2, 4)),
    (("Equalize", 0.1, 4), ("Equalize", 0.7, 6)),
    (("Equalize", 0.3, 8), ("AutoContrast", 0.4, 3)), (("Solarize", 0.6, 4), ("AutoContrast", 0.7, 6)),
    (("AutoContrast", 0.2, 9), ("Brightness", 0.4, 8)), (("Equalize", 0.1, 0), ("Equalize", 0.0, 6)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 4)),
    (("Equalize", 0.5, 5), ("AutoContrast", 0.1, 2)), (("Solarize", 0.5, 5), ("AutoContrast", 0.9, 5)),
    (("AutoContrast", 0.6, 1), ("AutoContrast", 0.7, 8)), (("Equalize", 0.2, 0), ("AutoContrast", 0.1, 2)),
    (("Equalize", 0.6, 9), ("Equalize", 0.4, 4)),
)
SVHN_POLICY = (
    (("ShearX", 0.9, 4), ("Invert", 0.2, 3)), (("ShearY", 0.9, 8), ("Invert", 0.7, 5)),
    (("Equalize", 0.6, 5), ("Solarize", 0.6, 6)), (("Invert", 0.9, 3), ("Equalize", 0.6, 3)),
    (("Equalize", 0.6, 1), ("Rotate", 0.9, 3)), (("ShearX", 0.9, 4), ("AutoContrast", 0.8, 3)),
    (("ShearY", 0.9, 8), ("Invert", 0.4, 5)), (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
    (("Invert", 0.9, 6), ("AutoContrast", 0.8, 1)), (("Equalize", 0.6, 3), ("Rotate", 0.9, 3)),
    (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)), (("ShearY", 0.8, 8), ("Invert", 0.7, 4)),
    (("Equalize", 0.9, 5), ("TranslateY", 0.6, 6)), (("Invert", 0.9, 4), ("Equalize", 0.6, 7)),
    (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)), (("Invert", 0.8, 5), ("TranslateY", 0.0, 2)),
    (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)), (("Invert", 0.6, 4), ("Rotate", 0.8, 4)),
    (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)), (("ShearX", 0.1, 6), ("Invert", 0.6, 5)),
    (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)), (("ShearY", 0.8, 4), ("Invert", 0.8, 8)),
    (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)), (("ShearY", 0.8, 5), ("AutoContrast", 0.7, 3)),
    (("ShearX", 0.7, 2), ("Invert", 0.1, 5)),
)
IMAGENET_POLICY = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)), (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)), (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)), (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)), (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)), (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)), (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)), (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)), (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)), (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)), (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)), (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)), (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)
POLICIES = {"cifar": CIFAR_POLICY, "svhn": SVHN_POLICY, "imagenet": IMAGENET_POLICY}
RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                   "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")

# Largest translate and cutout side, as fractions of the side of the images the policy was
# learned on (see the module docstring), and the original's constants in pixels.
SCALED = {"cifar": (10 / 32, 20 / 32), "svhn": (10 / 32, 20 / 32),
          "imagenet": (150 / 331, 60 / 331), "randaugment": (100 / 224, 80 / 224)}
FAITHFUL = {"cifar": (250, 200), "svhn": (250, 200), "imagenet": (250, 200),
            "randaugment": (100, 80)}


@dataclasses.dataclass(frozen=True)
class Magnitudes:
  """Arguments at level 10 of the size-dependent ops."""
  translate: float  # pixels
  cutout: int  # side of the square, pixels
  posterize_bits: tuple[int, int]  # bits kept at level 0 and at level 10


def magnitudes(policy: str, image_size: int, faithful: bool = False) -> Magnitudes:
  """The level-10 arguments for `policy` (cifar, svhn, imagenet, randaugment)."""
  if faithful:
    translate, side = FAITHFUL[policy]
    return Magnitudes(float(translate), side, (0, 4))
  translate, side = SCALED[policy]
  return Magnitudes(translate * image_size, round(side * image_size), (8, 4))


# ---------------------------------------------------------------- pixel ops (PIL's)

def blend(image1: tf.Tensor, image2: tf.Tensor, factor) -> tf.Tensor:
  """image1 + factor (image2 - image1), clipped to [0, 255]: 0 gives image1, 1 image2."""
  image1, image2 = tf.cast(image1, tf.float32), tf.cast(image2, tf.float32)
  return tf.cast(tf.clip_by_value(image1 + factor * (image2 - image1), 0.0, 255.0), tf.uint8)


def grayscale(image: tf.Tensor) -> tf.Tensor:
  """ITU-R 601 luma as float32 [H, W, 1] (the image itself when it has one channel)."""
  image = tf.cast(image, tf.float32)
  if image.shape[-1] == 1:
    return image
  return tf.reduce_sum(image * tf.constant([0.2989, 0.5870, 0.1140]), -1, keepdims=True)


def invert(image):
  return 255 - image


def solarize(image, threshold: int):
  """Inverts the pixels at or above `threshold` (0..256; 256 changes nothing)."""
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
  """Adds `addition` (clipped) to the pixels below `threshold`."""
  added = tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255)
  return tf.where(image < threshold, tf.cast(added, tf.uint8), image)


def posterize(image, bits: int):
  """Keeps the `bits` most significant bits of every pixel (0 bits: black)."""
  step = 2 ** (8 - bits)
  return tf.cast(tf.cast(image, tf.int32) // step * step, tf.uint8)


def color(image, factor):
  """Saturation: blend with the grayscale image (0 gray, 1 unchanged)."""
  gray = tf.broadcast_to(grayscale(image), tf.shape(image))
  return blend(gray, image, factor)


def contrast(image, factor):
  """Blend with the mean gray level (0 a flat image, 1 unchanged)."""
  return blend(tf.fill(tf.shape(image), tf.reduce_mean(grayscale(image))), image, factor)


def brightness(image, factor):
  """Blend with black (0 black, 1 unchanged)."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
  """Blend with PIL's SMOOTH filter (3x3, centre 5, /13) inside a 1-pixel border."""
  channels = image.shape[-1]
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], "VALID")
  smooth = tf.cast(tf.round(tf.clip_by_value(smooth[0], 0.0, 255.0)), tf.uint8)
  inside = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  smooth = tf.where(inside, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
  return blend(smooth, image, factor)


def autocontrast(image):
  """Stretches each channel linearly to [0, 255] (channels with one value stay)."""
  pixels = tf.cast(image, tf.float64)  # float64: the same truncations as PIL's table
  low = tf.reduce_min(pixels, axis=(0, 1))
  high = tf.reduce_max(pixels, axis=(0, 1))
  scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(high > low, -low * scale, 0.0)
  return tf.cast(tf.clip_by_value(pixels * scale + offset, 0.0, 255.0), tf.uint8)


def equalize(image):
  """PIL's histogram equalisation, per channel."""
  channels = tf.transpose(tf.reshape(tf.cast(image, tf.int32), [-1, image.shape[-1]]))
  histogram = tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)  # [C, 256]
  last = tf.reduce_max(tf.where(histogram > 0, tf.range(256), 0), axis=-1)
  step = (tf.reduce_sum(histogram, -1) - tf.gather(histogram, last, batch_dims=1)) // 255
  safe = tf.maximum(step, 1)[:, None]
  lut = (tf.cumsum(histogram, axis=-1) + safe // 2) // safe
  lut = tf.clip_by_value(tf.concat([tf.zeros_like(lut[:, :1]), lut[:, :-1]], -1), 0, 255)
  equalized = tf.gather(lut, channels, batch_dims=1)
  equalized = tf.where(step[:, None] > 0, equalized, channels)
  return tf.reshape(tf.cast(tf.transpose(equalized), tf.uint8), tf.shape(image))


# ---------------------------------------------------------------- geometric ops

def transform(image, matrix) -> tf.Tensor:
  """Output pixel (x, y) takes input pixel (a0 x + a1 y + a2, b0 x + b1 y + b2), nearest.

  `matrix` is [a0, a1, a2, b0, b1, b2] (x = column, y = row); uncovered pixels get FILL.
  """
  transforms = tf.concat([tf.cast(tf.stack(matrix), tf.float32), tf.zeros([2])], 0)[None]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transforms, output_shape=tf.shape(image)[:2],
      fill_value=float(FILL), interpolation="NEAREST", fill_mode="CONSTANT")[0]


def translate_x(image, pixels):
  """Moves the content `pixels` to the right (left when negative)."""
  return transform(image, [1.0, 0.0, -pixels, 0.0, 1.0, 0.0])


def translate_y(image, pixels):
  """Moves the content `pixels` down (up when negative)."""
  return transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -pixels])


def shear_x(image, level):
  """Output (x, y) takes input (x + level y, y), as PIL's affine shear."""
  return transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0])


def shear_y(image, level):
  return transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0])


def rotate(image, degrees):
  """Rotates the content counter-clockwise by `degrees` about the image centre."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(radians), tf.sin(radians)
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  cy, cx = (size[0] - 1) / 2, (size[1] - 1) / 2
  return transform(image, [cos, -sin, cx - cos * cx + sin * cy,
                           sin, cos, cy - sin * cx - cos * cy])


def cutout_square(image, side, seed):
  """Fills a side x side square (clipped at the edges), centred uniformly, with FILL."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  cy = tf.random.stateless_uniform([], seed, 0, height, tf.int32)
  cx = tf.random.stateless_uniform([], seed + 1, 0, width, tf.int32)
  rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
  inside = ((rows >= cy - side // 2) & (rows < cy - side // 2 + side)
            & (cols >= cx - side // 2) & (cols < cx - side // 2 + side))
  return tf.where(inside[..., None], tf.constant(FILL, tf.uint8), image)


# ---------------------------------------------------------------- levels to ops

def _signed(value, seed):
  """value or -value, each with probability 1/2."""
  negate = tf.random.stateless_uniform([], seed) < 0.5
  return tf.where(negate, -value, value)


def apply_op(image, name: str, level: float, seed, mags: Magnitudes) -> tf.Tensor:
  """Applies op `name` at `level` (0..10): the level-to-argument map of AutoAugment."""
  fraction = level / MAX_LEVEL
  enhance = fraction * 1.8 + 0.1  # Color, Contrast, Brightness, Sharpness: 0.1 .. 1.9
  if name == "AutoContrast":
    return autocontrast(image)
  if name == "Equalize":
    return equalize(image)
  if name == "Invert":
    return invert(image)
  if name == "Rotate":
    return rotate(image, _signed(fraction * 30.0, seed))
  if name == "Posterize":
    low, high = mags.posterize_bits
    return posterize(image, low + int(fraction * (high - low)))
  if name == "Solarize":
    return solarize(image, int(fraction * 256))
  if name == "SolarizeAdd":
    return solarize_add(image, int(fraction * 110))
  if name in ("Color", "Contrast", "Brightness", "Sharpness"):
    return {"Color": color, "Contrast": contrast, "Brightness": brightness,
            "Sharpness": sharpness}[name](image, enhance)
  if name in ("ShearX", "ShearY"):
    return (shear_x if name == "ShearX" else shear_y)(image, _signed(fraction * 0.3, seed))
  if name in ("TranslateX", "TranslateY"):
    pixels = _signed(fraction * mags.translate, seed)
    return (translate_x if name == "TranslateX" else translate_y)(image, pixels)
  if name == "Cutout":
    return cutout_square(image, int(fraction * mags.cutout), seed)
  raise ValueError(f"Unknown augmentation op '{name}'.")


def _fold(seed, value: int):
  return tf.random.experimental.stateless_fold_in(seed, value)


def autoaugment(image: tf.Tensor, seed: tf.Tensor, policy: str, mags: Magnitudes) -> tf.Tensor:
  """One sub-policy of POLICIES[policy], drawn uniformly; each op applied with its probability."""
  sub_policies = POLICIES[policy]
  choice = tf.random.stateless_uniform([], _fold(seed, 0), 0, len(sub_policies), tf.int32)

  def branch(sub_policy):
    def apply(image=image):
      for k, (name, probability, level) in enumerate(sub_policy):
        op_seed = _fold(seed, k + 1)
        if probability > 0:
          image = tf.cond(tf.random.stateless_uniform([], op_seed) < probability,
                          lambda i=image, s=op_seed, n=name, l=level: apply_op(i, n, l, s + 1, mags),
                          lambda i=image: i)
      return image
    return apply

  return tf.switch_case(choice, [branch(p) for p in sub_policies])


def randaugment(image: tf.Tensor, seed: tf.Tensor, num_layers: int, magnitude: float,
                mags: Magnitudes) -> tf.Tensor:
  """`num_layers` ops drawn uniformly from RANDAUGMENT_OPS, each applied at `magnitude`."""
  for layer in range(num_layers):
    layer_seed = _fold(seed, layer)
    choice = tf.random.stateless_uniform([], layer_seed, 0, len(RANDAUGMENT_OPS), tf.int32)
    image = tf.switch_case(choice, [
        lambda i=image, n=name: apply_op(i, n, magnitude, layer_seed + 1, mags)
        for name in RANDAUGMENT_OPS])
  return image
