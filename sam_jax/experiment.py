"""What a config names, built: its dataset, model, input size and examples.

Shared by the training loop (`loop.py`) and the analyses (`analysis/report.py`), so that
an analysis rebuilds exactly the model and the training labels a run was trained with.
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
from absl import logging

from sam_jax import replicas
from sam_jax.data import label_noise, loading
from sam_jax.data.datasets import DatasetInfo
from sam_jax.errors import UsageError
from sam_jax.models import get_model, input_resolution


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The config's model, with its BatchNorm and skip-connection options."""
  options = {}
  if config.sync_batch_norm:
    options["bn_axis_name"] = replicas.REPLICA_AXES
  if config.use_additional_skip_connections:
    options["additional_skip_connections"] = True
  if config.freeze_batch_norm:
    options["frozen_batch_norm"] = True
  return get_model(config.model_name, num_classes, dtype=jnp.dtype(config.dtype), **options)


def input_size(config: ml_collections.ConfigDict, model: nn.Module,
               info: DatasetInfo) -> int | None:
  """The side images are resized or cropped to: the config's, the model's (EfficientNet),
  the dataset's default (JPEG datasets: 224), or None to keep the images as they are."""
  return config.image_size or input_resolution(model) or info.default_image_size


def image_shape(config: ml_collections.ConfigDict, model: nn.Module,
                info: DatasetInfo) -> tuple[int, ...]:
  """[H, W, C] of the images the model sees."""
  size = input_size(config, model, info)
  return (size, size, info.image_shape[-1]) if size else info.image_shape


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


def load_train_shards(config: ml_collections.ConfigDict, info: DatasetInfo,
                      shards: range, num_shards: int):
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
  examples, realised = label_noise.symmetric_noise(
      examples, config.label_noise, info.num_classes, config.label_noise_seed,
      keep_possible=config.label_noise_keep_possible)
  logging.info("Label noise: %.4f of these %d training labels changed (asked %.2f).",
               realised, len(examples["label"]), config.label_noise)
  return examples, realised
