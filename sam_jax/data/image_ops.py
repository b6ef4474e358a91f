"""TensorFlow image ops of the training and evaluation pipelines (float or uint8 images).

Random ops are stateless: each takes a [2] int64 key and draws from it, or from
`fold_in(key, n)` for its n-th draw, so that no two streams share a key.
"""

from typing import Any

from sam_jax.data.datasets import DatasetInfo
from sam_jax.data.tf_cpu import tf

FLIP, POLICY = 1, 2  # streams of an example's key besides the crop (which uses the key itself)


def fold_in(key: tf.Tensor, value: int) -> tf.Tensor:
  """A new key for stream `value` of `key` (a hash: unrelated to key + value)."""
  # TF's type stubs lack tf.random.experimental.
  fold = tf.random.experimental.stateless_fold_in  # pyright: ignore[reportAttributeAccessIssue]
  return fold(key, value)


def normalize(image: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
  """uint8 -> float32 in [0, 1] -> per-channel (x - mean) / std."""
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(info.mean)) / tf.constant(info.std)


def crop_and_flip(image: tf.Tensor, key: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
  """Basic augmentation: REFLECT-pad by `crop_padding`, random crop back, random flip."""
  pad = info.crop_padding
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
  image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=key)
  return flip(image, fold_in(key, FLIP), info)


def flip(image: tf.Tensor, key: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
  """A random left-right flip, for the datasets that flip."""
  return tf.image.stateless_random_flip_left_right(image, seed=key) if info.flip else image


def cutout(images: tf.Tensor, key: tf.Tensor, length: int, per_example: bool) -> tf.Tensor:
  """Zeroes a length x length square centred uniformly (clipped at the edges).

  One square for the whole [batch, H, W, C] batch, as the original, or one per example.
  """
  batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
  draws = batch if per_example else 1
  shape: list[Any] = [draws, 1, 1]  # TF packs a tensor among ints; its stubs take ints only
  cy = tf.random.stateless_uniform(shape, fold_in(key, 0), 0, height, tf.int32)
  cx = tf.random.stateless_uniform(shape, fold_in(key, 1), 0, width, tf.int32)
  top, left = cy - length // 2, cx - length // 2
  rows, cols = tf.range(height)[None, :, None], tf.range(width)[None, None, :]
  inside = (rows >= top) & (rows < top + length) & (cols >= left) & (cols < left + length)
  return images * tf.cast(~inside, images.dtype)[..., None]


def mixup(images: tf.Tensor, labels: tf.Tensor, key: tf.Tensor, alpha: float):
  """Mixup (Zhang et al., 2018) as the original: x w + reverse(x) (1 - w), w ~ Beta(a, a)
  once per batch, w = max(w, 1 - w); `labels` are one-hot (or already soft)."""
  # TF's type stubs want a tensor alpha; a float converts as for any TF op.
  g = tf.random.stateless_gamma([2], key, alpha=alpha)  # pyright: ignore[reportArgumentType]
  w = tf.maximum(g[0] / (g[0] + g[1]), g[1] / (g[0] + g[1]))
  return images * w + images[::-1] * (1 - w), labels * w + labels[::-1] * (1 - w)


RESIZE_METHODS = ("bicubic", "bicubic_tf1")


def resize(images: tf.Tensor, image_size: int | None, method: str = "bicubic") -> tf.Tensor:
  """Bicubic resize of an image [H, W, C] or a batch to image_size x image_size, float32;
  None or the same size leaves it alone.

  method: "bicubic" is `tf.image.resize` (half-pixel centres, Keys' cubic with a = -0.5);
  "bicubic_tf1" is the original's `tf.compat.v1.image.resize_bicubic` (dataset_source.py:67,
  dataset_source_imagenet.py:107): TF's ResizeBicubic kernel without half-pixel centres,
  a = -0.75, its output unclipped (it rings past [0, 255] at sharp edges).
  """
  if image_size is None or tuple(images.shape[-3:-1]) == (image_size, image_size):
    return images
  if method == "bicubic":
    return tf.image.resize(images, (image_size, image_size), method="bicubic")
  if method != "bicubic_tf1":
    raise ValueError(f"Unknown resize method '{method}': choose one of {RESIZE_METHODS}.")
  batch = images if images.shape.rank == 4 else images[None]
  resized = tf.raw_ops.ResizeBicubic(images=batch, size=[image_size, image_size],
                                     align_corners=False, half_pixel_centers=False)
  return resized if images.shape.rank == 4 else resized[0]
