"""TFDS input pipelines: the CIFAR family and the digits in memory, JPEG datasets
(ImageNet, the finetuning sets) streamed; numpy batches out.

In-memory datasets: the training stream is a pure function of (seed, step). A global
example counter i picks epoch i // N and, through a stateless index shuffle, example
perm_epoch(i % N); augmentations use stateless random ops seeded by (seed, i). A resumed
run sees exactly the batches an uninterrupted run would. Streamed datasets: a seeded file
order and shuffle buffer give the same stream on every run with the same seed, and a
resume skips the records already consumed (reading, not decoding them).
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

from sam_jax.data import augment, imagenet  # noqa: E402
from sam_jax.data import digits  # noqa: E402,F401  (registers the offline `digits` builder)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the pipeline needs to know about one dataset (constants of the original code)."""
  tfds_name: str
  num_classes: int
  image_shape: tuple[int | None, int | None, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_splits: tuple[str, ...] = ("train",)
  test_split: str = "test"
  crop_padding: int = 4  # reflect-pad then random crop back
  flip: bool = True  # random left-right flip; the original flips SVHN too, so do we
  autoaugment_policy: str | None = None  # the AutoAugment policy learned for it
  # JPEG datasets of any image size: streamed from disk, Inception-cropped to a model
  # resolution (default_image_size for models without one, such as ResNet).
  streamed: bool = False
  default_image_size: int | None = None


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _jpeg_dataset(tfds_name: str, num_classes: int, train_splits=("train",),
                  test_split="test") -> DatasetInfo:
  """ImageNet and the finetuning datasets: ImageNet's crops and normalisation."""
  return DatasetInfo(tfds_name, num_classes, (None, None, 3), IMAGENET_MEAN, IMAGENET_STD,
                     train_splits, test_split, autoaugment_policy="imagenet", streamed=True,
                     default_image_size=224)


DATASETS = {
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), autoaugment_policy="cifar"),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), autoaugment_policy="cifar"),
    "svhn": DatasetInfo("svhn_cropped", 10, (32, 32, 3), (0.4309, 0.4302, 0.4463),
                        (0.1976, 0.2003, 0.1981), train_splits=("train", "extra"),
                        autoaugment_policy="svhn"),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, (28, 28, 1), (0.1307,), (0.3081,)),
    # Mean and std of the 1,437 training images, pixels scaled to [0, 1].
    "digits": DatasetInfo("digits", 10, (8, 8, 1), (0.3054,), (0.3760,), crop_padding=1,
                          flip=False),
    "imagenet": _jpeg_dataset("imagenet2012", 1000, test_split="validation"),
    # Finetuning (paper Table 3): train (+ validation where TFDS has one) against test.
    "oxford_flowers102": _jpeg_dataset("oxford_flowers102", 102, ("train", "validation")),
    "oxford_iiit_pet": _jpeg_dataset("oxford_iiit_pet", 37),
    "cars196": _jpeg_dataset("cars196", 196),
    "food101": _jpeg_dataset("food101", 101, test_split="validation"),
    "caltech_birds2011": _jpeg_dataset("caltech_birds2011", 200),
}


def get_dataset_info(name: str) -> DatasetInfo:
  """The DatasetInfo of `name`, or a ValueError listing the known datasets."""
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset '{name}': choose one of {', '.join(DATASETS)}.")
  return DATASETS[name]


IMAGE_AUGMENTATIONS = ("none", "basic", "autoaugment", "aa-only", "randaugment")
BATCH_AUGMENTATIONS = ("none", "cutout", "mixup", "mixcut")


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The training augmentations (the config fields of the same names).

  image: none; basic (crop and flip: 4-pixel reflect-pad crop for the small datasets, the
    Inception crop for JPEG datasets); autoaugment (the AutoAugment policy, then basic,
    as the original); aa-only (the policy alone; the original's choice for SVHN);
    randaugment (RandAugment N=randaug_num_layers, M=randaug_magnitude, then basic).
  batch: none; cutout; mixup (one Beta(alpha, alpha) weight w per batch, w = max(w, 1-w),
    each example mixed with the batch reversed, labels too); mixcut (mixup, then cutout).
  """
  image: str = "basic"
  batch: str = "none"
  cutout_length: int = 16
  cutout_mask: str = "batch"  # one square per batch (the original) or per "example"
  mixup_alpha: float = 1.0
  autoaugment_policy: str | None = None  # None: the dataset's own
  faithful_magnitudes: bool = False  # the original's ImageNet magnitudes at every size
  randaug_num_layers: int = 2
  randaug_magnitude: float = 9

  @classmethod
  def from_config(cls, config) -> "Augmentation":
    return cls(config.image_level_augmentations, config.batch_level_augmentations,
               config.cutout_length, config.cutout_mask, config.mixup_alpha,
               config.autoaugment_policy, config.autoaugment_faithful_magnitudes,
               config.randaug_num_layers, config.randaug_magnitude)

  def policy(self, info: DatasetInfo) -> str | None:
    return self.autoaugment_policy or info.autoaugment_policy

  def check(self, info: DatasetInfo) -> None:
    """Raises a one-line ValueError for a choice the pipeline does not offer."""
    for value, choices, what in [
        (self.image, IMAGE_AUGMENTATIONS, "image_level_augmentations"),
        (self.batch, BATCH_AUGMENTATIONS, "batch_level_augmentations"),
        (self.cutout_mask, ("batch", "example"), "cutout_mask")]:
      if value not in choices:
        raise ValueError(f"Unknown {what} '{value}': choose one of {', '.join(choices)}.")
    if self.image in ("autoaugment", "aa-only"):
      if self.policy(info) not in augment.POLICIES:
        raise ValueError(
            f"No AutoAugment policy was learned on {info.tfds_name}: set "
            f"--config.autoaugment_policy to one of {', '.join(augment.POLICIES)} to use one.")
    if self.batch in ("mixup", "mixcut") and self.mixup_alpha <= 0:
      raise ValueError(f"mixup_alpha must be positive, not {self.mixup_alpha}.")


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


@dataclasses.dataclass(frozen=True)
class StreamedSplit:
  """A split of a JPEG dataset, read from disk as it is consumed (too big to hold)."""
  builder: tfds.core.DatasetBuilder
  split: object  # a TFDS split (this process's share)
  num_examples: int


def _count(builder, split) -> int:
  """Examples in `split`: from the dataset's metadata, else by reading the labels once."""
  try:
    count = builder.info.splits[split].num_examples
  except (KeyError, ValueError, TypeError, AttributeError):
    count = 0
  if count:
    return count
  labels = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return int(labels.map(lambda e: 1).reduce(0, lambda n, _: n + 1))


def load_split(info: DatasetInfo, split, data_dir: str | None):
  """This process's split: in memory {"image": uint8 NHWC, "label": int32} for the small
  datasets, a StreamedSplit for the JPEG ones.

  Raises:
    FileNotFoundError: one line saying where the data was looked for and how to get it.
  """
  try:
    builder = tfds.builder(info.tfds_name, data_dir=data_dir)
    if info.tfds_name == "digits" and not builder.is_prepared():
      builder.download_and_prepare()  # generated offline from scikit-learn
    if info.streamed:
      return StreamedSplit(builder, split, _count(builder, split))
    chunks = list(tfds.as_numpy(builder.as_dataset(split=split).batch(8192)))
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError) as e:
    where = data_dir or tfds.core.constants.DATA_DIR
    how = (" (ImageNet must be downloaded by hand first: see the TFDS imagenet2012 page)"
           if info.tfds_name == "imagenet2012" else "")
    raise FileNotFoundError(
        f"TFDS dataset '{info.tfds_name}' is not prepared in {where}: run "
        f"`tfds build {info.tfds_name} --data_dir={where}` on a machine with network{how}, "
        f"or pass --config.data_dir=DIR where it is ({type(e).__name__}).") from None
  image = np.concatenate([c["image"] for c in chunks])
  if image.ndim == 3:
    image = image[..., None]
  label = np.concatenate([c["label"] for c in chunks])
  return {"image": image.astype(np.uint8), "label": label.astype(np.int32)}


def num_examples(examples) -> int:
  """Size of a split returned by `load_split`."""
  if isinstance(examples, StreamedSplit):
    return examples.num_examples
  return len(examples["label"])


def normalize(image: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
  """uint8 -> float32 in [0, 1] -> per-channel (x - mean) / std."""
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(info.mean)) / tf.constant(info.std)


def crop_and_flip(image: tf.Tensor, seed: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
  """Basic augmentation: REFLECT-pad by `crop_padding`, random crop back, random flip."""
  pad = info.crop_padding
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
  image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)
  return flip(image, seed + 1, info)


def flip(image: tf.Tensor, seed: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
  return tf.image.stateless_random_flip_left_right(image, seed=seed) if info.flip else image


def cutout(images: tf.Tensor, seed: tf.Tensor, length: int, per_example: bool) -> tf.Tensor:
  """Zeroes a length x length square centred uniformly (clipped at the edges).

  One square for the whole [batch, H, W, C] batch, as the original, or one per example.
  """
  batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
  draws = batch if per_example else 1
  cy = tf.random.stateless_uniform([draws, 1, 1], seed, 0, height, tf.int32)
  cx = tf.random.stateless_uniform([draws, 1, 1], seed + 1, 0, width, tf.int32)
  top, left = cy - length // 2, cx - length // 2
  rows, cols = tf.range(height)[None, :, None], tf.range(width)[None, None, :]
  inside = (rows >= top) & (rows < top + length) & (cols >= left) & (cols < left + length)
  return images * tf.cast(~inside, images.dtype)[..., None]


def mixup(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float):
  """Mixup (Zhang et al., 2018) as the original: x w + reverse(x) (1 - w), w ~ Beta(a, a)
  once per batch, w = max(w, 1 - w); `labels` are one-hot (or already soft)."""
  g = tf.random.stateless_gamma([2], seed, alpha=alpha)
  w = tf.maximum(g[0] / (g[0] + g[1]), g[1] / (g[0] + g[1]))
  return images * w + images[::-1] * (1 - w), labels * w + labels[::-1] * (1 - w)


def resize(image: tf.Tensor, image_size: int | None) -> tf.Tensor:
  """Bicubic resize to image_size x image_size; None or the same size leaves it alone."""
  if image_size is None or tuple(image.shape[-3:-1]) == (image_size, image_size):
    return image
  return tf.image.resize(image, (image_size, image_size), method="bicubic")


def _policy_ops(image, key, info: DatasetInfo, aug: Augmentation, size: int):
  """AutoAugment or RandAugment on a uint8 image, as `aug` asks (else the image)."""
  if aug.image in ("autoaugment", "aa-only"):
    policy = aug.policy(info)
    return augment.autoaugment(image, key, policy,
                               augment.magnitudes(policy, size, aug.faithful_magnitudes))
  if aug.image == "randaugment":
    return augment.randaugment(image, key, aug.randaug_num_layers, aug.randaug_magnitude,
                               augment.magnitudes("randaugment", size, aug.faithful_magnitudes))
  return image


def augment_small(image, key, info: DatasetInfo, aug: Augmentation):
  """CIFAR order: policy on uint8, then reflect-pad crop and flip."""
  image = _policy_ops(image, key + 3, info, aug, info.image_shape[0])
  if aug.image in ("basic", "autoaugment", "randaugment"):
    image = crop_and_flip(image, key, info)
  return image


def augment_streamed(data, key, info: DatasetInfo, aug: Augmentation, image_size: int):
  """ImageNet order: Inception crop, policy, flip (the centre crop for `none`)."""
  if aug.image == "none":
    return imagenet.center_crop(data, image_size)
  image = imagenet.inception_crop(data, key, image_size)
  image = _policy_ops(image, key + 3, info, aug, image_size)
  return image if aug.image == "aa-only" else flip(image, key + 1, info)


def _batch_ops(info: DatasetInfo, aug: Augmentation, seed: int, batch_size: int,
               image_size: int | None):
  """The batch-level map: mixup, cutout, resize; drops the example counter."""
  def apply(batch):
    index = batch.pop("index")
    key = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.cast(seed, tf.int64), index[0] // batch_size]), 7)
    if aug.batch in ("mixup", "mixcut"):
      one_hot = tf.one_hot(batch["label"], info.num_classes)
      batch["image"], batch["label"] = mixup(batch["image"], one_hot, key, aug.mixup_alpha)
    if aug.batch in ("cutout", "mixcut"):
      batch["image"] = cutout(batch["image"], key + 1, aug.cutout_length,
                              aug.cutout_mask == "example")
    batch["image"] = resize(batch["image"], image_size)
    return batch
  return apply


def train_batches(info: DatasetInfo, examples, batch_size: int, *, seed: int,
                  start_step: int = 0, augmentation: Augmentation = Augmentation(),
                  image_size: int | None = None):
  """Endless iterator of augmented training batches, starting at `start_step`.

  Args:
    info: the dataset.
    examples: this process's training examples (from `load_split`).
    batch_size: examples per batch on this process.
    seed: the run's seed; the order and augmentations depend only on it.
    start_step: number of batches already consumed (resume).
    augmentation: what to apply (see `Augmentation`).
    image_size: resize (bicubic) to image_size x image_size, for models with their own
      resolution such as EfficientNet; None keeps the dataset's. JPEG datasets crop to it.

  Yields:
    {"image": float32 [batch, H, W, C], "label": int32 [batch]} numpy batches; with mixup,
    "label" is float32 [batch, num_classes].
  """
  augmentation.check(info)
  if isinstance(examples, StreamedSplit):
    ds = _streamed_examples(info, examples, batch_size, seed, start_step, augmentation,
                            image_size or info.default_image_size)
  else:
    ds = _small_examples(info, examples, batch_size, seed, start_step, augmentation)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.map(_batch_ops(info, augmentation, seed, batch_size, image_size),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(2).as_numpy_iterator()


def _small_examples(info, examples, batch_size, seed, start_step, aug):
  """Example i: epoch i // N, position perm_epoch(i % N) by a stateless index shuffle."""
  num = len(examples["label"])
  images, labels = tf.constant(examples["image"]), tf.constant(examples["label"])

  def example(i):
    epoch, position = i // num, i % num
    index = tf.random.experimental.index_shuffle(
        position, tf.stack([tf.cast(seed, tf.int64), epoch]), num - 1)
    key = tf.stack([tf.cast(seed, tf.int64), i])
    image = augment_small(images[index], key, info, aug)
    return {"image": normalize(image, info), "label": labels[index], "index": i}

  ds = tf.data.Dataset.range(start_step * batch_size, 2**62)
  return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


SHUFFLE_BUFFER = 16_384  # examples; the files are shuffled too


def _streamed_examples(info, split: StreamedSplit, batch_size, seed, start_step, aug,
                       image_size):
  """Files in a seeded order, a seeded shuffle buffer, repeated; a resume skips the
  records already consumed before decoding them. Only the image bytes and the label are
  kept, and only the crop window is decoded."""
  read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=False)
  ds = split.builder.as_dataset(split=split.split, shuffle_files=True, read_config=read_config,
                                decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(lambda e: (e["image"], e["label"])).repeat()
  buffer = min(SHUFFLE_BUFFER, split.num_examples)
  ds = ds.shuffle(buffer, seed=seed).enumerate().skip(start_step * batch_size)

  def example(i, record):
    data, label = record
    key = tf.stack([tf.cast(seed, tf.int64), i])
    image = augment_streamed(data, key, info, aug, image_size)
    return {"image": normalize(image, info), "label": tf.cast(label, tf.int32), "index": i}

  return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def eval_batches(info: DatasetInfo, examples, batch_size: int, image_size: int | None = None):
  """Every example exactly once, in order; the last batch is padded and masked.

  `image_size` resizes (JPEG datasets: centre-crops) as in `train_batches`.

  Yields:
    {"image", "label", "mask"} numpy batches of exactly `batch_size`; mask 0 on padding.
  """
  if isinstance(examples, StreamedSplit):
    size = image_size or info.default_image_size
    ds = examples.builder.as_dataset(split=examples.split,
                                     decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda e: {"image": normalize(imagenet.center_crop(e["image"], size), info),
                           "label": tf.cast(e["label"], tf.int32), "mask": 1.0},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    ds = tf.data.Dataset.from_tensor_slices(examples).map(
        lambda e: {"image": resize(normalize(e["image"], info), image_size),
                   "label": e["label"], "mask": 1.0})

  def pad(batch):  # the last, short batch: zeros with mask 0
    missing = batch_size - tf.shape(batch["label"])[0]
    return {k: tf.pad(v, [[0, missing]] + [[0, 0]] * (len(v.shape) - 1))
            for k, v in batch.items()}

  return ds.batch(batch_size).map(pad).prefetch(2).as_numpy_iterator()
