"""Decoding and cropping of JPEG datasets (ImageNet and the finetuning sets), in TF.

Training crop: the Inception crop (Szegedy et al., 2015) as in the original and the Flax
ImageNet example: a window covering 8%..100% of the image with aspect ratio 3/4..4/3
(10 attempts; when all fail, the evaluation crop instead), bicubic-resized to
size x size. Evaluation crop: the central square whose side is size/(size + 32) of the
shorter side (224 of 256), resized. Only the window is decoded
(`tf.image.decode_and_crop_jpeg`); other encodings (PNG) are decoded whole, then cropped.
With the "bicubic" resize, crops come back as uint8, rounded and clipped; with the
original's "bicubic_tf1", as the float32 output of its op, unclipped, as the original fed
them on (dataset_source_imagenet.py:105-107, :189-201).
"""

from sam_jax.data import image_ops
from sam_jax.data.tf_cpu import tf

CROP_PADDING = 32


def image_shape(data: tf.Tensor) -> tf.Tensor:
  """[height, width] of an encoded image, from the JPEG header when it is one."""
  return tf.cond(
      tf.io.is_jpeg(data), lambda: tf.image.extract_jpeg_shape(data)[:2],
      lambda: tf.shape(_decode_whole(data))[:2])


def _decode_whole(data):
  return tf.image.decode_image(data, channels=3, expand_animations=False)


def decode_window(data: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """Decodes the [offset_y, offset_x, height, width] window of an encoded image."""
  return tf.cond(
      tf.io.is_jpeg(data), lambda: tf.image.decode_and_crop_jpeg(data, window, channels=3),
      lambda: tf.image.crop_to_bounding_box(_decode_whole(data), *tf.unstack(window)))


def resize(image: tf.Tensor, image_size: int, method: str) -> tf.Tensor:
  """A decoded crop resized to image_size x image_size (`image_ops.resize`): uint8,
  rounded and clipped, for "bicubic"; the op's float32 output for "bicubic_tf1"."""
  image = image_ops.resize(tf.cast(image, tf.float32), image_size, method)
  if method == "bicubic":
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
  return tf.ensure_shape(image, (image_size, image_size, 3))


def center_window(shape: tf.Tensor, image_size: int) -> tf.Tensor:
  """The evaluation window: a centred square of side size/(size+32) x the shorter side."""
  side = tf.cast(
      image_size / (image_size + CROP_PADDING) * tf.cast(tf.reduce_min(shape), tf.float32),
      tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, side, side])


def center_crop(data: tf.Tensor, image_size: int, method: str = "bicubic") -> tf.Tensor:
  """Evaluation preprocessing: the centre window, resized."""
  window = center_window(image_shape(data), image_size)
  return resize(decode_window(data, window), image_size, method)


def inception_window(shape: tf.Tensor, seed: tf.Tensor, image_size: int) -> tf.Tensor:
  """A random window of 8%..100% of the area and aspect 3/4..4/3, or the centre window."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([shape, [3]], 0), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  failed = tf.reduce_all(size[:2] == shape)  # every attempt failed: the whole image came back
  return tf.where(failed, center_window(shape, image_size), window)


def inception_crop(data: tf.Tensor, seed: tf.Tensor, image_size: int,
                   method: str = "bicubic") -> tf.Tensor:
  """Training preprocessing: a random Inception window, decoded alone and resized."""
  window = inception_window(image_shape(data), seed, image_size)
  return resize(decode_window(data, window), image_size, method)
