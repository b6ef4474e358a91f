"""TFDS input pipelines for the CIFAR family and the digits: numpy batches out.

The training stream is a pure function of (seed, step): a global example counter i
picks epoch i // N and, through a stateless index shuffle, example perm_epoch(i % N);
augmentations use stateless random ops seeded by (seed, i). A resumed run therefore
sees exactly the batches an uninterrupted run would, with no shuffle buffer to refill.
Each process reads only its own slice of every split (`tfds.even_splits`).
"""

import dataclasses
import functools
import operator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

try:  # TensorFlow is only the input pipeline: it must never take a GPU from JAX.
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # already initialised; nothing was placed on a GPU by us
  pass

from sam_jax.data import digits  # noqa: E402,F401  (registers the offline `digits` builder)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the pipeline needs to know about one dataset (constants of the original code)."""
  tfds_name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_splits: tuple[str, ...] = ("train",)
  test_split: str = "test"
  crop_padding: int = 4  # reflect-pad then random crop back
  flip: bool = True  # random left-right flip; the original flips SVHN too, so do we


DATASETS = {
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762)),
    "svhn": DatasetInfo("svhn_cropped", 10, (32, 32, 3), (0.4309, 0.4302, 0.4463),
                        (0.1976, 0.2003, 0.1981), train_splits=("train", "extra")),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, (28, 28, 1), (0.1307,), (0.3081,)),
    # Mean and std of the 1,437 training images, pixels scaled to [0, 1].
    "digits": DatasetInfo("digits", 10, (8, 8, 1), (0.3054,), (0.3760,), crop_padding=1,
                          flip=False),
}


def get_dataset_info(name: str) -> DatasetInfo:
  """The DatasetInfo of `name`, or a ValueError listing the known datasets."""
  if name not in DATASETS:
    later = " (ImageNet arrives with the input pipelines issue)" if "imagenet" in name else ""
    raise ValueError(f"Unknown dataset '{name}'{later}: choose one of {', '.join(DATASETS)}.")
  return DATASETS[name]


def split_names(info: DatasetInfo, use_test_set: bool) -> tuple[str, str]:
  """(train, eval) TFDS split strings; without the test set, 10% of train is held out."""
  if use_test_set:
    return "+".join(info.train_splits), info.test_split
  train = "+".join(f"{s}[:90%]" for s in info.train_splits)
  held_out = "+".join(f"{s}[90%:]" for s in info.train_splits)
  return train, held_out


def process_split(split: str, process_index: int | None = None,
                  process_count: int | None = None):
  """This process's share of `split`: consecutive, disjoint, together the whole split.

  Each '+'-joined part (e.g. SVHN's train+extra) is shared out on its own, so every
  process gets some of each. Returns a TFDS split object for `builder.as_dataset`.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  parts = [tfds.even_splits(part, process_count)[process_index] for part in split.split("+")]
  return functools.reduce(operator.add, parts)


def load_split(info: DatasetInfo, split, data_dir: str | None) -> dict[str, np.ndarray]:
  """Reads a (process) split into memory as {"image": uint8 NHWC, "label": int32}.

  Raises:
    FileNotFoundError: one line saying where the data was looked for and how to get it.
  """
  try:
    builder = tfds.builder(info.tfds_name, data_dir=data_dir)
    if info.tfds_name == "digits" and not builder.is_prepared():
      builder.download_and_prepare()  # generated offline from scikit-learn
    chunks = list(tfds.as_numpy(builder.as_dataset(split=split).batch(8192)))
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError) as e:
    where = data_dir or tfds.core.constants.DATA_DIR
    raise FileNotFoundError(
        f"TFDS dataset '{info.tfds_name}' is not prepared in {where}: run "
        f"`tfds build {info.tfds_name} --data_dir={where}` on a machine with network, or "
        f"pass --config.data_dir=DIR where it is ({type(e).__name__}).") from None
  image = np.concatenate([c["image"] for c in chunks])
  if image.ndim == 3:
    image = image[..., None]
  label = np.concatenate([c["label"] for c in chunks])
  return {"image": image.astype(np.uint8), "label": label.astype(np.int32)}


def normalize(image: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
  """uint8 -> float32 in [0, 1] -> per-channel (x - mean) / std."""
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(info.mean)) / tf.constant(info.std)


def crop_and_flip(image: tf.Tensor, seed: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
  """Basic augmentation: REFLECT-pad by `crop_padding`, random crop back, random flip."""
  pad = info.crop_padding
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
  image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)
  if info.flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
  return image


def cutout(image: tf.Tensor, seed: tf.Tensor, length: int) -> tf.Tensor:
  """Zeroes a length x length square centred uniformly in the image (clipped at edges)."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  cy = tf.random.stateless_uniform([], seed, 0, height, tf.int32)
  cx = tf.random.stateless_uniform([], seed + 1, 0, width, tf.int32)
  top, left = cy - length // 2, cx - length // 2
  rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
  inside = (rows >= top) & (rows < top + length) & (cols >= left) & (cols < left + length)
  return image * tf.cast(~inside, image.dtype)[..., None]


def resize(image: tf.Tensor, image_size: int | None) -> tf.Tensor:
  """Bicubic resize to image_size x image_size; None or the same size leaves it alone."""
  if image_size is None or tuple(image.shape[:2]) == (image_size, image_size):
    return image
  return tf.image.resize(image, (image_size, image_size), method="bicubic")


def check_augmentations(image_augmentation: str, batch_augmentation: str,
                        cutout_mask: str = "batch") -> None:
  """Raises a one-line ValueError for augmentations this pipeline does not offer."""
  if image_augmentation not in ("none", "basic"):
    raise ValueError(f"image_level_augmentations='{image_augmentation}' is not available yet "
                     "(AutoAugment and RandAugment arrive with the input pipelines issue): "
                     "use none or basic.")
  if batch_augmentation not in ("none", "cutout"):
    raise ValueError(f"batch_level_augmentations='{batch_augmentation}' is not available yet "
                     "(mixup and mixcut arrive with the input pipelines issue): use none or "
                     "cutout.")
  if cutout_mask not in ("batch", "example"):
    raise ValueError(f"Unknown cutout_mask '{cutout_mask}': choose batch or example.")


def train_batches(info: DatasetInfo, examples: dict[str, np.ndarray], batch_size: int, *,
                  seed: int, start_step: int = 0, image_augmentation: str = "basic",
                  batch_augmentation: str = "none", cutout_length: int = 16,
                  cutout_mask: str = "batch", image_size: int | None = None):
  """Endless iterator of augmented training batches, starting at `start_step`.

  Args:
    info: the dataset.
    examples: this process's training examples (from `load_split`).
    batch_size: examples per batch on this process.
    seed: the run's seed; the order and augmentations depend only on it.
    start_step: number of batches already consumed (resume).
    image_augmentation: "none" or "basic".
    batch_augmentation: "none" or "cutout".
    cutout_length: side of the cutout square.
    cutout_mask: "batch": one square for the whole batch, as the original code (whose
      README calls it needed for the published numbers); "example": one square per
      example, as DeVries & Taylor (2017).
    image_size: resize (bicubic, after normalisation) to image_size x image_size, for
      models with their own resolution such as EfficientNet; None keeps the dataset's.

  Yields:
    {"image": float32 [batch, H, W, C], "label": int32 [batch]} numpy batches.
  """
  check_augmentations(image_augmentation, batch_augmentation, cutout_mask)
  num = len(examples["label"])
  images, labels = tf.constant(examples["image"]), tf.constant(examples["label"])

  def example(i):
    epoch, position = i // num, i % num
    index = tf.random.experimental.index_shuffle(
        position, tf.stack([tf.cast(seed, tf.int64), epoch]), num - 1)
    key = tf.stack([tf.cast(seed, tf.int64), i])
    image = images[index]
    if image_augmentation == "basic":
      image = crop_and_flip(image, key, info)
    image = normalize(image, info)
    if batch_augmentation == "cutout":
      square = key if cutout_mask == "example" else tf.stack([key[0], i // batch_size])
      image = cutout(image, square + 2, cutout_length)
    return {"image": resize(image, image_size), "label": labels[index]}

  ds = tf.data.Dataset.range(start_step * batch_size, 2**62)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
  return ds.as_numpy_iterator()


def eval_batches(info: DatasetInfo, examples: dict[str, np.ndarray], batch_size: int,
                 image_size: int | None = None):
  """Every example exactly once, in order; the last batch is padded and masked.

  `image_size` resizes as in `train_batches`.

  Yields:
    {"image", "label", "mask"} numpy batches of exactly `batch_size`; mask 0 on padding.
  """
  num = len(examples["label"])
  ds = tf.data.Dataset.from_tensor_slices(examples).map(
      lambda e: {"image": resize(normalize(e["image"], info), image_size), "label": e["label"],
                 "mask": 1.0})
  padding = (-num) % batch_size
  if padding:
    shape = (image_size, image_size, info.image_shape[-1]) if image_size else info.image_shape
    blank = {"image": tf.zeros((padding,) + shape, tf.float32),
             "label": tf.zeros(padding, tf.int32), "mask": tf.zeros(padding, tf.float32)}
    ds = ds.concatenate(tf.data.Dataset.from_tensor_slices(blank))
  return ds.batch(batch_size).prefetch(2).as_numpy_iterator()

