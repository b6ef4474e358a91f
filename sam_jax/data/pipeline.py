"""The training and evaluation streams: numpy batches out of `loading.load_split`'s splits.

In-memory datasets: the training stream is a pure function of (seed, step). A global
example counter i picks epoch i // N and example order_epoch(i % N), where each epoch's
order is a stateless index shuffle (a uniform permutation) or, with `shuffle_buffer`, the
original's: the split in file order through a shuffle buffer seeded by the epoch's key;
augmentations use stateless random ops keyed by (seed, i). A resumed run sees exactly the
batches an uninterrupted run would. Streamed datasets: a seeded file order and shuffle
buffer give the same stream on every run with the same seed, and a resume skips the
records already consumed (reading, not decoding them). Evaluation scores every example
once, the last batch padded and masked.
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


def train_batches(info: DatasetInfo, examples, batch_size: int, *, seed: int, start_step: int = 0,
                  augmentation: Augmentation = Augmentation(), image_size: int | None = None,
                  first_shard: int = 0, num_shards: int = 1, stop_step: int | None = None,
                  resize_method: str = "bicubic", shuffle_buffer: int | None = None):
  """Iterator of augmented training batches from `start_step` to `stop_step` (or endless).

  Args:
    info: the dataset.
    examples: this process's training examples (from `loading.load_split`), or a list
      of its shards, `first_shard` and the next ones of the run's `num_shards`.
    batch_size: examples per batch on this process.
    seed: the run's seed; the order and augmentations depend only on it (and the shards).
    start_step: number of batches already consumed (resume).
    augmentation: what to apply (see `Augmentation`).
    image_size: resize (bicubic) to image_size x image_size, for models with their own
      resolution such as EfficientNet; None keeps the dataset's. JPEG datasets crop to it.
    first_shard, num_shards: the training split is cut into `num_shards` shards, each its
      own stream with its own order and random keys; every batch takes batch_size /
      len(examples) examples from each shard given, in shard order. A global batch is
      then the same for any number of processes sharing the shards out (one shard: the
      plain stream).
    stop_step: the run's last step: nothing past it is read or augmented, so that the
      stream ends with the run instead of being torn down mid-work.
    resize_method: how images are resized to `image_size` (`image_ops.resize`).
    shuffle_buffer: in-memory datasets: None, a uniform permutation of each shard every
      epoch; N, the shard in file order through a shuffle buffer of N examples, drawn
      anew every epoch (the original's 50,000, dataset_source.py:116).

  Yields:
    {"image": float32 [batch, H, W, C], "label": int32 [batch]} numpy batches; with mixup,
    "label" is float32 [batch, num_classes].
  """
  augmentation.check(info)
  shards = examples if isinstance(examples, list) else [examples]
  shard_batch = batch_size // len(shards)
  resize = (image_size, resize_method)
  streams = [
      _shard_batches(info, shard, shard_batch, _Keys(seed, first_shard + i, num_shards),
                     (start_step, stop_step), augmentation, resize, shuffle_buffer)
      for i, shard in enumerate(shards)
  ]
  ds = streams[0] if len(streams) == 1 else tf.data.Dataset.zip(tuple(streams)).map(
      lambda *batches: {k: tf.concat([b[k] for b in batches], 0) for k in batches[0]})
  return ds.prefetch(2).as_numpy_iterator()


class _Keys:
  """Random keys of one shard's stream: example i and epoch e of shard s (of S) use
  (seed, i*S + s) and (seed, e*S + s), so one shard has the keys (seed, i), (seed, e)."""
  def __init__(self, seed: int, shard: int, num_shards: int):
    self.seed, self.shard, self.num_shards = seed, shard, num_shards

  def __call__(self, index) -> tf.Tensor:
    index = tf.cast(index, tf.int64) * self.num_shards + self.shard
    return tf.stack([tf.cast(self.seed, tf.int64), index])

  @property
  def shuffle_seed(self) -> int:
    return self.seed * self.num_shards + self.shard


def _shard_batches(info, examples, batch_size, keys, steps, aug, resize, shuffle_buffer):
  """One shard's batches for `steps` = (start, stop or None); resize = (size, method)."""
  image_size, method = resize
  if isinstance(examples, StreamedSplit):
    ds = _streamed_examples(info, examples, batch_size, keys, steps, aug,
                            (image_size or info.default_image_size, method))
  else:
    ds = _small_examples(info, examples, batch_size, keys, steps, aug, shuffle_buffer)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.map(
      _batch_ops(info, aug, keys, batch_size, resize), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)


def _small_examples(info, examples, batch_size, keys, steps, aug, shuffle_buffer):
  """Example i of the stream: epoch e = i // N, the example at position i % N of e's order.

  Epoch e's order is a stateless index shuffle keyed by keys(e) (every permutation equally
  likely), or, with `shuffle_buffer`, `_buffered_orders`: the original's.
  """
  num = len(examples["label"])
  images, labels = tf.constant(examples["image"]), tf.constant(examples["label"])

  def example(i, index):
    image = augment_small(images[index], keys(i), info, aug)
    return {"image": image_ops.normalize(image, info), "label": labels[index], "index": i}

  def permuted(i):
    # TF's type stubs lack tf.random.experimental.
    shuffle = tf.random.experimental.index_shuffle  # pyright: ignore[reportAttributeAccessIssue]
    return example(i, shuffle(i % num, keys(i // num), num - 1))

  start, stop = steps
  first = start * batch_size
  ds = tf.data.Dataset.range(first, 2 ** 62 if stop is None else stop * batch_size)
  if shuffle_buffer is None:
    return ds.map(permuted, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = tf.data.Dataset.zip((ds, _buffered_orders(num, keys, first, shuffle_buffer)))
  return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _buffered_orders(num: int, keys: "_Keys", first: int, shuffle_buffer: int):
  """The example indices from the stream's example `first` on, epoch after epoch: each
  epoch e is range(num) through a tf.data shuffle buffer of `shuffle_buffer` examples
  seeded by keys(e), the original's `ds.shuffle(50000)` over the split in file order
  (dataset_source.py:116). An example comes out at most `shuffle_buffer` - 1 places ahead
  of its file position."""
  def epoch(e):
    seed = tf.random.stateless_uniform([], keys(e), 0, tf.int64.max, tf.int64)
    positions = tf.data.Dataset.range(num)
    # TF's stubs type the seed as a Python int; the op takes an int64 tensor as well.
    return positions.shuffle(shuffle_buffer, seed=seed)  # pyright: ignore[reportArgumentType]

  return tf.data.Dataset.range(first // num, 2 ** 62).flat_map(epoch).skip(first % num)


def _streamed_examples(info, split: StreamedSplit, batch_size, keys, steps, aug, resize):
  """Files in a seeded order, a seeded shuffle buffer, repeated; a resume skips the
  records already consumed before decoding them. Only the image bytes and the label are
  kept, and only the crop window is decoded."""
  read_config = tfds.ReadConfig(shuffle_seed=keys.shuffle_seed, add_tfds_id=False)
  # TFDS's logging decorator (wrapt) hides as_dataset's `split` from the type checker.
  ds = split.builder.as_dataset(
      split=split.split,  # pyright: ignore[reportCallIssue]
      shuffle_files=True,
      read_config=read_config,
      decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(lambda e: (e["image"], e["label"])).repeat()
  buffer = min(SHUFFLE_BUFFER, split.num_examples)
  start, stop = steps
  ds = ds.shuffle(buffer, seed=keys.shuffle_seed).enumerate().skip(start * batch_size)
  if stop is not None:
    ds = ds.take((stop - start) * batch_size)

  def example(i, record):
    data, label = record
    image = augment_streamed(data, keys(i), info, aug, *resize)
    return {
        "image": image_ops.normalize(image, info),
        "label": tf.cast(label, tf.int32),
        "index": i
    }

  return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _batch_ops(info: DatasetInfo, aug: Augmentation, keys: _Keys, batch_size: int,
               resize: tuple[int | None, str]):
  """The batch-level map: mixup, cutout, resize (after normalisation and cutout, as the
  original's dataset_source.py:127-131); drops the example counter."""
  def apply(batch):
    index = batch.pop("index")
    key = fold_in(keys(index[0] // batch_size), _BATCH_STREAM)
    if aug.batch in ("mixup", "mixcut"):
      one_hot = tf.one_hot(batch["label"], info.num_classes)
      batch["image"], batch["label"] = image_ops.mixup(batch["image"], one_hot, key,
                                                       aug.mixup_alpha)
    if aug.batch in ("cutout", "mixcut"):
      batch["image"] = image_ops.cutout(batch["image"], fold_in(key, 1), aug.cutout_length,
                                        aug.cutout_mask == "example")
    batch["image"] = image_ops.resize(batch["image"], *resize)
    return batch

  return apply


def eval_batches(info: DatasetInfo, examples, batch_size: int, image_size: int | None = None,
                 num_batches: int | None = None, resize_method: str = "bicubic"):
  """Every example exactly once, in order; the last batch is padded and masked.

  `image_size` resizes (JPEG datasets: centre-crops) with `resize_method`, as in
  `train_batches`. With `num_batches`, whole batches of padding follow up to that many:
  every process then takes part in the same number of evaluation steps, whatever its
  share.

  Yields:
    {"image", "label", "mask"} numpy batches of exactly `batch_size`; mask 0 on padding.
  """
  if isinstance(examples, StreamedSplit):
    size = image_size or info.default_image_size
    if size is None:
      raise ValueError(f"{info.tfds_name} is streamed: it needs an image size to crop to.")
    # TFDS's logging decorator (wrapt) hides as_dataset's `split` from the type checker.
    ds = examples.builder.as_dataset(
        split=examples.split,  # pyright: ignore[reportCallIssue]
        decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(
        lambda e: {
            "image": image_ops.normalize(
                imagenet.center_crop(e["image"], size, resize_method), info),
            "label": tf.cast(e["label"], tf.int32),
            "mask": 1.0
        }, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    ds = tf.data.Dataset.from_tensor_slices(examples).map(
        lambda e: {
            "image": image_ops.resize(
                image_ops.normalize(e["image"], info), image_size, resize_method),
            "label": e["label"],
            "mask": 1.0
        })

  def pad(batch):  # the last, short batch: zeros with mask 0
    missing = batch_size - tf.shape(batch["label"])[0]
    return {k: tf.pad(v, [[0, missing]] + [[0, 0]] * (len(v.shape) - 1)) for k, v in batch.items()}

  ds = ds.batch(batch_size).map(pad)
  if num_batches is not None:
    # TF's type stubs allow any nesting here; this one is a dict of TensorSpecs.
    specs: dict[str, tf.TensorSpec] = ds.element_spec  # pyright: ignore[reportAssignmentType]
    padding = {k: tf.zeros([batch_size, *spec.shape[1:]], spec.dtype) for k, spec in specs.items()}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat()).take(num_batches)
  return ds.prefetch(2).as_numpy_iterator()
