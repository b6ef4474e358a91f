"""The training and evaluation streams: numpy batches out of `loading.load_split`'s splits.

In-memory datasets: the training stream is a pure function of (seed, step). A global
example counter i picks epoch i // N and, through a stateless index shuffle, example
perm_epoch(i % N); augmentations use stateless random ops keyed by (seed, i). A resumed
run sees exactly the batches an uninterrupted run would. Streamed datasets: a seeded file
order and shuffle buffer give the same stream on every run with the same seed, and a
resume skips the records already consumed (reading, not decoding them). Evaluation
scores every example once, the last batch padded and masked.
"""

import tensorflow_datasets as tfds

from sam_jax.data import imagenet, image_ops
from sam_jax.data.augmentation import Augmentation, augment_small, augment_streamed
from sam_jax.data.datasets import DatasetInfo
from sam_jax.data.image_ops import fold_in
from sam_jax.data.loading import StreamedSplit
from sam_jax.data.tf_cpu import tf

SHUFFLE_BUFFER = 16_384  # examples; the files are shuffled too
_BATCH_STREAM = 7  # batch keys are fold_in([seed, batch index], 7), apart from example keys


def train_batches(info: DatasetInfo, examples, batch_size: int, *, seed: int,
                  start_step: int = 0, augmentation: Augmentation = Augmentation(),
                  image_size: int | None = None):
  """Endless iterator of augmented training batches, starting at `start_step`.

  Args:
    info: the dataset.
    examples: this process's training examples (from `loading.load_split`).
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


def _example_key(seed: int, index) -> tf.Tensor:
  return tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])


def _small_examples(info, examples, batch_size, seed, start_step, aug):
  """Example i: epoch i // N, position perm_epoch(i % N) by a stateless index shuffle."""
  num = len(examples["label"])
  images, labels = tf.constant(examples["image"]), tf.constant(examples["label"])

  def example(i):
    epoch, position = i // num, i % num
    index = tf.random.experimental.index_shuffle(position, _example_key(seed, epoch), num - 1)
    image = augment_small(images[index], _example_key(seed, i), info, aug)
    return {"image": image_ops.normalize(image, info), "label": labels[index], "index": i}

  ds = tf.data.Dataset.range(start_step * batch_size, 2**62)
  return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
    image = augment_streamed(data, _example_key(seed, i), info, aug, image_size)
    return {"image": image_ops.normalize(image, info), "label": tf.cast(label, tf.int32),
            "index": i}

  return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _batch_ops(info: DatasetInfo, aug: Augmentation, seed: int, batch_size: int,
               image_size: int | None):
  """The batch-level map: mixup, cutout, resize; drops the example counter."""
  def apply(batch):
    index = batch.pop("index")
    key = fold_in(_example_key(seed, index[0] // batch_size), _BATCH_STREAM)
    if aug.batch in ("mixup", "mixcut"):
      one_hot = tf.one_hot(batch["label"], info.num_classes)
      batch["image"], batch["label"] = image_ops.mixup(batch["image"], one_hot, key,
                                                       aug.mixup_alpha)
    if aug.batch in ("cutout", "mixcut"):
      batch["image"] = image_ops.cutout(batch["image"], fold_in(key, 1), aug.cutout_length,
                                        aug.cutout_mask == "example")
    batch["image"] = image_ops.resize(batch["image"], image_size)
    return batch
  return apply


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
    ds = ds.map(lambda e: {
        "image": image_ops.normalize(imagenet.center_crop(e["image"], size), info),
        "label": tf.cast(e["label"], tf.int32), "mask": 1.0},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    ds = tf.data.Dataset.from_tensor_slices(examples).map(
        lambda e: {"image": image_ops.resize(image_ops.normalize(e["image"], info), image_size),
                   "label": e["label"], "mask": 1.0})

  def pad(batch):  # the last, short batch: zeros with mask 0
    missing = batch_size - tf.shape(batch["label"])[0]
    return {k: tf.pad(v, [[0, missing]] + [[0, 0]] * (len(v.shape) - 1))
            for k, v in batch.items()}

  return ds.batch(batch_size).map(pad).prefetch(2).as_numpy_iterator()
