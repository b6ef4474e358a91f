"""Reading TFDS splits: which splits a run uses, this process's share, memory or stream.

Small datasets (the CIFAR family, SVHN, Fashion-MNIST, the digits) are read whole into
numpy arrays; JPEG datasets (ImageNet, the finetuning sets) become a `StreamedSplit` that
the pipeline reads as it goes. Each process reads only its own slice of every split.
"""

import contextlib
import dataclasses
import io
import os
import re
import functools
import operator

import jax
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants
from absl import logging

from sam_jax.data import digits  # noqa: F401  (registers the offline `digits` builder)
from sam_jax.data import tf_cpu  # noqa: F401  (TF without GPUs, before TFDS runs anything)
from sam_jax.data.tf_cpu import tf
from sam_jax.data.datasets import DatasetInfo
from sam_jax.errors import UsageError


def split_names(info: DatasetInfo, use_test_set: bool) -> tuple[str, str]:
  """(train, eval) TFDS split strings.

  Without the test set, the tail of the first train split (from `info.holdout_start`) is
  the validation set and the other train splits are trained on whole, as the original's
  dataset_source.py:195-196 (CIFAR), :269-270 (Fashion-MNIST) and :318-321 (SVHN:
  train[:65929] + extra against train[65929:]).
  """
  if use_test_set:
    return "+".join(info.train_splits), info.test_split
  first, *others = info.train_splits
  cut = info.holdout_start
  return "+".join([f"{first}[:{cut}]", *others]), f"{first}[{cut}:]"


def shard(split: str, index: int, count: int):
  """Shard `index` of `count` of `split`: consecutive, disjoint, together the whole split.

  Each '+'-joined part (e.g. SVHN's train+extra) is cut on its own, so every shard gets
  some of each. Returns a TFDS split object for `builder.as_dataset`.
  """
  parts = [tfds.even_splits(part, count)[index] for part in split.split("+")]
  # TFDS types the parts as str | split objects; they are split objects, which add up.
  return functools.reduce(operator.add, parts)  # pyright: ignore[reportArgumentType]


def process_split(split: str, process_index: int | None = None, process_count: int | None = None):
  """This process's share of `split`: its shard of as many as there are processes."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  return shard(split, process_index, process_count)


def process_shards(num_shards: int) -> range:
  """The shards (of `num_shards`) this process reads: a consecutive block of
  num_shards / process_count, so that process order is shard order.

  Raises:
    UsageError: when the processes cannot share the shards out evenly.
  """
  count = jax.process_count()
  if num_shards < 1 or num_shards % count:
    raise UsageError(f"data_shards={num_shards} does not share out over {count} processes: "
                     f"use a multiple of {count}.")
  per_process = num_shards // count
  return range(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)


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
    UsageError: one line saying where the data was looked for and how to get it.
  """
  try:
    builder = tfds.builder(info.tfds_name, data_dir=data_dir)
    if info.tfds_name == "digits" and not builder.is_prepared():
      prepare_digits(builder)
    if info.streamed:
      return StreamedSplit(builder, split, _count(builder, split))
    # TFDS's logging decorator (wrapt) hides as_dataset's `split` from the type checker.
    dataset = builder.as_dataset(split=split)  # pyright: ignore[reportCallIssue]
    chunks = list(tfds.as_numpy(dataset.batch(8192)))
  except (tfds.core.DatasetNotFoundError, AssertionError, FileNotFoundError) as e:
    where = data_dir or tfds_constants.DATA_DIR
    how = (" (ImageNet must be downloaded by hand first: see the TFDS imagenet2012 page)"
           if info.tfds_name == "imagenet2012" else "")
    raise UsageError(
        f"TFDS dataset '{info.tfds_name}' is not prepared in {where}: run "
        f"`tfds build {info.tfds_name} --data_dir={where}` on a machine with network{how}, "
        "or pass --config.data_dir=DIR where it is.") from e
  except tf.errors.OpError as e:  # e.g. DataLossError: random bytes in a record file
    where = data_dir or tfds_constants.DATA_DIR
    reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", e.message).strip()
    raise UsageError(
        f"TFDS dataset '{info.tfds_name}' in {where} is damaged ({type(e).__name__}: "
        f"{reason}): delete {os.path.join(where, info.tfds_name)} and prepare it again "
        f"(`tfds build {info.tfds_name} --data_dir={where}`; the digits are rewritten by "
        "themselves).") from e
  if not chunks:  # an empty split (or share of one)
    return {
        "image": np.zeros((0, *info.fixed_image_shape), np.uint8),
        "label": np.zeros(0, np.int32)
    }
  image = np.concatenate([c["image"] for c in chunks])
  if image.ndim == 3:
    image = image[..., None]
  label = np.concatenate([c["label"] for c in chunks])
  return {"image": image.astype(np.uint8), "label": label.astype(np.int32)}


def prepare_digits(builder) -> None:
  """Writes the offline digits (from scikit-learn) where TFDS reads them; several processes
  sharing a data_dir may do it at once: the first one's copy is kept."""
  logging.info("Writing the offline digits (scikit-learn's, no download) to %s, once.",
               builder.data_dir)
  tfds.disable_progress_bar()  # and TFDS's "Downloading and preparing ... Unknown size":
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare()
  except FileExistsError:  # another process renamed its copy into place first
    if not builder.is_prepared():
      raise


def num_examples(examples) -> int:
  """Size of a split returned by `load_split`."""
  if isinstance(examples, StreamedSplit):
    return examples.num_examples
  return len(examples["label"])


def concatenate(splits: list):
  """Several splits from `load_split` as one (e.g. a process's training shards)."""
  if len(splits) == 1:
    return splits[0]
  if isinstance(splits[0], StreamedSplit):
    joined = functools.reduce(operator.add, [s.split for s in splits])
    return StreamedSplit(splits[0].builder, joined, sum(s.num_examples for s in splits))
  return {key: np.concatenate([s[key] for s in splits]) for key in splits[0]}
