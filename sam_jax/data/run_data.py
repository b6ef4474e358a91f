"""A training run's examples on this process: its shards, its label noise, and the counts
that every process agrees on (`load_run_data`); also one split for the analyses.

The training split is cut into `config.data_shards` shards (default: one per process),
each process reads its own; the evaluation split is shared out. Training labels carry the
config's label noise, a function of `label_noise_seed` and the images, so that an
analysis sees the labels a run was trained on; evaluation labels stay clean.
"""

import dataclasses
from typing import Any

import jax
import ml_collections
from absl import logging

from sam_jax import processes
from sam_jax.data import label_noise, loading
from sam_jax.data.datasets import DatasetInfo
from sam_jax.errors import UsageError


def load_examples(config: ml_collections.ConfigDict, info: DatasetInfo, split: str,
                  whole: bool = False):
  """This process's share of the run's "train" or "eval" split (all of it if `whole`).

  Training examples carry the config's label noise; evaluation labels stay clean.

  Returns:
    (examples, realised label-noise rate or None): in-memory arrays or a StreamedSplit.
  """
  name = loading.split_names(info, config.use_test_set)[("train", "eval").index(split)]
  examples = loading.load_split(info, name if whole else loading.process_split(name),
                                config.data_dir)
  if split == "eval":
    return examples, None
  return noisy_labels(config, info, examples)


def load_train_shards(config: ml_collections.ConfigDict, info: DatasetInfo, shards: range,
                      num_shards: int):
  """Shards `shards` (of `num_shards`) of the training split, with the label noise.

  Returns:
    ([examples of each shard], (labels changed, labels) over them, or None without noise).
  """
  name = loading.split_names(info, config.use_test_set)[0]
  loaded, changed, count = [], 0.0, 0
  for shard in shards:
    examples = loading.load_split(info, loading.shard(name, shard, num_shards), config.data_dir)
    examples, realised = noisy_labels(config, info, examples)
    loaded.append(examples)
    count += loading.num_examples(examples)
    changed += (realised or 0.0) * loading.num_examples(examples)
  return loaded, ((round(changed), count) if config.label_noise else None)


@dataclasses.dataclass(frozen=True)
class RunData:
  """A training run's examples on this process, and the counts all processes agree on."""
  train: list  # this process's shards of the training split, with the label noise
  shards: range  # their indices, of `num_shards`
  num_shards: int
  eval: Any  # this process's share of the evaluation split
  steps_per_epoch: int  # set by the smallest shard, so that every process takes as many
  eval_steps: int  # batches per evaluation, the same on every process (padding)
  train_eval_steps: int  # the same for the training split (`also_eval_on_training_set`)
  realised_noise: float | None  # over the whole training split


def load_run_data(config: ml_collections.ConfigDict, info: DatasetInfo) -> RunData:
  """Reads this process's shards (`config.data_shards`, default one per process) and its
  share of the evaluation split, and agrees with the other processes on the counts.

  Raises:
    UsageError: for shards that do not share out over the processes or the batch, or a
      batch larger than the training split.
  """
  num_shards = config.data_shards or jax.process_count()
  shards = loading.process_shards(num_shards)
  if config.batch_size % num_shards:
    raise UsageError(f"The batch of {config.batch_size} does not split over data_shards="
                     f"{num_shards}: use a multiple of {num_shards}.")
  train, noise = load_train_shards(config, info, shards, num_shards)
  evaluation, _ = load_examples(config, info, "eval")
  train_sizes = [loading.num_examples(shard) for shard in train]
  sizes = processes.gather([min(train_sizes), sum(train_sizes), loading.num_examples(evaluation)])
  steps_per_epoch = int(sizes[:, 0].min()) // (config.batch_size // num_shards)
  if steps_per_epoch == 0:
    raise UsageError(f"The batch of {config.batch_size} is larger than the "
                     f"{int(sizes[:, 1].sum())} training examples of {config.dataset}: use "
                     "a smaller --config.batch_size.")
  process_batch = config.batch_size // jax.process_count()
  realised = None
  if noise is not None:
    changed, count = processes.gather(noise).sum(axis=0)
    realised = float(changed / count)
  logging.info(
      "%s",
      processes.describe(
          f"training shards {shards.start}-{shards.stop - 1} of {num_shards} "
          f"({sum(train_sizes)} examples), {loading.num_examples(evaluation)} evaluation examples"))
  return RunData(train, shards, num_shards, evaluation, steps_per_epoch,
                 -(-int(sizes[:, 2].max()) // process_batch),
                 -(-int(sizes[:, 1].max()) // process_batch), realised)


def noisy_labels(config: ml_collections.ConfigDict, info: DatasetInfo, examples):
  """The training examples with the config's label noise, and the realised noise rate.

  Returns (examples, None) without noise. The noise is a function of the seed and the
  images, so the analyses see the labels a run was trained on.
  """
  if not config.label_noise:
    return examples, None
  if info.streamed:
    raise UsageError(f"label_noise needs an in-memory dataset such as cifar10, not "
                     f"{config.dataset}: drop --config.label_noise.")
  examples, realised = label_noise.symmetric_noise(examples, config.label_noise, info.num_classes,
                                                   config.label_noise_seed,
                                                   keep_possible=config.label_noise_keep_possible)
  logging.info("Label noise: %.4f of these %d training labels changed (asked %.2f).", realised,
               len(examples["label"]), config.label_noise)
  return examples, realised
