"""AutoAugment and RandAugment on uint8 images, in core TensorFlow ops (no tf-addons).

AutoAugment picks one of a policy's sub-policies (`policies.POLICIES`) uniformly and
applies its two ops in turn, each with its probability and level 0..10. RandAugment
applies N ops drawn uniformly from 16, all at magnitude M. Every op maps uint8
[H, W, C] to uint8 [H, W, C] (C = 1 or 3).

Randomness is stateless: every draw comes from a [2] int64 key, or from
`fold_in(key, n)` for a function's n-th draw, so an image's augmentation depends only
on the run's seed and the image's position in the stream.
"""

import math

from sam_jax.data.image_ops import fold_in
from sam_jax.data.policies import POLICIES, RANDAUGMENT_OPS, Magnitudes
from sam_jax.data.tf_cpu import tf

MAX_LEVEL = 10.0
FILL = 128  # value of pixels uncovered by geometric ops and of AutoAugment's cutout

# ---------------------------------------------------------------- pixel ops (PIL's)


def blend(image1: tf.Tensor, image2: tf.Tensor, factor) -> tf.Tensor:
  """image1 + factor (image2 - image1), clipped to [0, 255]: 0 gives image1, 1 image2."""
  image1, image2 = tf.cast(image1, tf.float32), tf.cast(image2, tf.float32)
  return tf.cast(tf.clip_by_value(image1 + factor * (image2 - image1), 0.0, 255.0), tf.uint8)


def grayscale(image: tf.Tensor) -> tf.Tensor:
  """ITU-R 601 luma as uint8 [H, W, 1] (the image itself when it has one channel)."""
  return image if image.shape[-1] == 1 else tf.image.rgb_to_grayscale(image)


def invert(image):
  return 255 - image


def solarize(image, threshold: int):
  """Inverts the pixels at or above `threshold` (0..256; 0 inverts all, 256 none)."""
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
  """Adds `addition` (clipped) to the pixels below `threshold`."""
  added = tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255)
  return tf.where(image < threshold, tf.cast(added, tf.uint8), image)


def posterize(image, bits: int):
  """Keeps the `bits` most significant bits of every pixel.

  0 bits keeps the top bit, as the original's `image >> 8 << 8` in TensorFlow, whose
  shifts clamp to 7 (autoaugment/autoaugment.py:187-188).
  """
  shift = min(8 - bits, 7)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def color(image, factor):
  """Saturation: blend with the grayscale image (0 gray, 1 unchanged)."""
  gray = tf.broadcast_to(grayscale(image), tf.shape(image))
  return blend(gray, image, factor)


def contrast(image, factor):
  """Blend with the mean gray level (0 a flat image, 1 unchanged), as PIL."""
  mean = tf.reduce_mean(tf.cast(grayscale(image), tf.float32))
  return blend(tf.fill(tf.shape(image), mean), image, factor)


def contrast_original(image, factor):
  """The original's Contrast: blend with the gray level H * W / 256, not the mean.

  Its autoaugment/autoaugment.py:171-172 sums the grayscale histogram's counts (the
  pixel count) where the mean needs the counts times the levels, so a 32x32 image is
  blended with level 4, a dark gray. Kept for the faithful mode only.
  """
  pixels = tf.cast(tf.shape(image)[0] * tf.shape(image)[1], tf.float32)
  level = tf.cast(tf.clip_by_value(pixels / 256.0, 0.0, 255.0), tf.uint8)
  return blend(tf.fill(tf.shape(image), level), image, factor)


def brightness(image, factor):
  """Blend with black (0 black, 1 unchanged)."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
  """Blend with PIL's SMOOTH filter (3x3, centre 5, /13) inside a 1-pixel border.

  The filtered values are truncated to integers, as the original (PIL rounds).
  """
  channels = image.shape[-1]
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], "VALID")
  smooth = tf.cast(tf.clip_by_value(smooth[0], 0.0, 255.0), tf.uint8)
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
  return tf.raw_ops.ImageProjectiveTransformV3(images=image[None], transforms=transforms,
                                               output_shape=tf.shape(image)[:2],
                                               fill_value=float(FILL), interpolation="NEAREST",
                                               fill_mode="CONSTANT")[0]


def translate_x(image, pixels):
  """Moves the content `pixels` to the left (right when negative), as the original."""
  return transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])


def translate_y(image, pixels):
  """Moves the content `pixels` up (down when negative), as the original."""
  return transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])


def shear_x(image, level):
  """Output (x, y) takes input (x + level y, y), as PIL's affine shear."""
  return transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0])


def shear_y(image, level):
  return transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0])


def rotate(image, degrees):
  """Rotates the content counter-clockwise by `degrees` about the image centre."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(radians), tf.sin(radians)
  height, width = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
  # The centre's offsets in tfa.image.rotate's order of float32 operations.
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
  return transform(image, [cos, -sin, x_offset, sin, cos, y_offset])


def cutout_square(image, pad: int, key):
  """Fills rows cy-pad..cy+pad-1, columns cx-pad..cx+pad-1 with FILL, (cy, cx) uniform."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  cy = tf.random.stateless_uniform([], fold_in(key, 0), 0, height, tf.int32)
  cx = tf.random.stateless_uniform([], fold_in(key, 1), 0, width, tf.int32)
  rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
  inside = (rows >= cy - pad) & (rows < cy + pad) & (cols >= cx - pad) & (cols < cx + pad)
  return tf.where(inside[..., None], tf.constant(FILL, tf.uint8), image)


# ---------------------------------------------------------------- levels to ops


def _signed(value, key):
  """value or -value, each with probability 1/2."""
  negate = tf.random.stateless_uniform([], key) < 0.5
  return tf.where(negate, -value, value)


def apply_op(image, name: str, level: float, key, mags: Magnitudes) -> tf.Tensor:
  """Applies op `name` at `level` (0..10): the level-to-argument map of AutoAugment.

  `key` draws the sign of the geometric ops and the place of the cutout square. With
  `mags.faithful`, every op gives the output of google-research/sam's
  autoaugment/autoaugment.py pixel for pixel, quirks included: Solarize's threshold
  int(level / 10 * 256) is cast to uint8, so level 10 inverts every pixel where PIL
  inverts none (:143, :477), and Contrast is `contrast_original`.
  """
  fraction = level / MAX_LEVEL
  enhance = fraction * 1.8 + 0.1  # Color, Contrast, Brightness, Sharpness: 0.1 .. 1.9
  if name == "AutoContrast":
    return autocontrast(image)
  if name == "Equalize":
    return equalize(image)
  if name == "Invert":
    return invert(image)
  if name == "Rotate":
    return rotate(image, _signed(fraction * 30.0, key))
  if name == "Posterize":
    low, high = mags.posterize_bits
    return posterize(image, low + int(fraction * (high - low)))
  if name == "Solarize":
    threshold = int(fraction * 256)
    return solarize(image, threshold % 256 if mags.faithful else threshold)
  if name == "SolarizeAdd":
    return solarize_add(image, int(fraction * 110))
  if name in ("Color", "Contrast", "Brightness", "Sharpness"):
    return {
        "Color": color,
        "Brightness": brightness,
        "Sharpness": sharpness,
        "Contrast": contrast_original if mags.faithful else contrast
    }[name](image, enhance)
  if name in ("ShearX", "ShearY"):
    return (shear_x if name == "ShearX" else shear_y)(image, _signed(fraction * 0.3, key))
  if name in ("TranslateX", "TranslateY"):
    pixels = _signed(fraction * mags.translate, key)
    return (translate_x if name == "TranslateX" else translate_y)(image, pixels)
  if name == "Cutout":
    return cutout_square(image, int(fraction * mags.cutout_pad), key)
  raise ValueError(f"Unknown augmentation op '{name}'.")


def autoaugment(image: tf.Tensor, key: tf.Tensor, policy: str, mags: Magnitudes) -> tf.Tensor:
  """One sub-policy of POLICIES[policy], drawn uniformly; each op applied with its probability.

  Keys: the sub-policy from fold_in(key, 0); op k's coin from fold_in(op_key, 0) and its
  arguments from fold_in(op_key, 1), with op_key = fold_in(key, k + 1).
  """
  sub_policies = POLICIES[policy]
  choice = tf.random.stateless_uniform([], fold_in(key, 0), 0, len(sub_policies), tf.int32)

  def branch(sub_policy):
    def apply(image=image):
      for k, (name, probability, level) in enumerate(sub_policy):
        op_key = fold_in(key, k + 1)
        if probability > 0:
          image = tf.cond(
              tf.random.stateless_uniform([], fold_in(op_key, 0)) < probability,
              lambda i=image, s=fold_in(op_key, 1), n=name, v=level: apply_op(i, n, v, s, mags),
              lambda i=image: i)
      return image

    return apply

  return tf.switch_case(choice, [branch(p) for p in sub_policies])


def randaugment(image: tf.Tensor, key: tf.Tensor, num_layers: int, magnitude: float,
                mags: Magnitudes) -> tf.Tensor:
  """`num_layers` ops drawn uniformly from RANDAUGMENT_OPS, each applied at `magnitude`.

  Layer l draws its op from fold_in(layer_key, 0) and the op's arguments from
  fold_in(layer_key, 1), with layer_key = fold_in(key, l).
  """
  for layer in range(num_layers):
    layer_key = fold_in(key, layer)
    choice = tf.random.stateless_uniform([], fold_in(layer_key, 0), 0, len(RANDAUGMENT_OPS),
                                         tf.int32)
    image = tf.switch_case(choice, [
        lambda i=image, n=name: apply_op(i, n, magnitude, fold_in(layer_key, 1), mags)
        for name in RANDAUGMENT_OPS
    ])
  return image
