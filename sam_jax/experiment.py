"""What a config names, built: its dataset, model, input size and examples.

Shared by the training loop (`loop.py`) and the analyses (`analysis/report.py`), so that
an analysis rebuilds exactly the model and the training labels a run was trained with.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from sam_jax import processes, replicas
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
  return get_model(config.model_name, num_classes, dtype=compute_dtype(config), **options)


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """config.dtype; "auto": bfloat16 on accelerators, float32 on CPU (whose bfloat16
  convolutions are emulated, and slower)."""
  if config.dtype == "auto":
    return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
  return jnp.dtype(config.dtype)


def replica_mapping(config: ml_collections.ConfigDict) -> str:
  """How the virtual replicas' passes run (`replicas.MAPPINGS`). "auto": the unrolled
  loop on CPU, where grouped convolutions are slow, and vmap on GPU and TPU, where they
  are native. Synchronised BatchNorm needs all replicas at once: vmap."""
  if config.sync_batch_norm:
    return "vmap"
  if config.replica_mapping == "auto":
    return "loop" if jax.default_backend() == "cpu" else "vmap"
  return config.replica_mapping


def input_size(config: ml_collections.ConfigDict, model: nn.Module,
               info: DatasetInfo) -> int | None:
  """The side images are resized or cropped to: the config's, the model's (EfficientNet),
  the dataset's default (JPEG datasets: 224), or None to keep the images as they are."""
  return config.image_size or input_resolution(model) or info.default_image_size


def image_shape(config: ml_collections.ConfigDict, model: nn.Module,
                info: DatasetInfo) -> tuple[int, ...]:
  """[H, W, C] of the images the model sees."""
  size = input_size(config, model, info)
  return (size, size, info.image_shape[-1]) if size else info.fixed_image_shape


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
                 -(-int(sizes[:, 2].max()) // process_batch), realised)


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


def ascent_only(sam: ml_collections.ConfigDict) -> bool:
  """Whether the clean gradient serves only to perturb (SAM, GCSAM, ESAM at every step),
  not in the update too (GSAM, LookSAM, WSAM, skipped steps; Momentum-SAM has no ascent)."""
  return (sam.rho > 0 and sam.variant in ("sam", "gcsam", "esam") and sam.every == 1
          and sam.probability == 1)


def train_step_options(config: ml_collections.ConfigDict, model: nn.Module) -> dict[str, Any]:
  """The loss and step options of `steps.train_step` that the config sets."""
  return dict(
      l2_weight_decay=config.weight_decay if config.weight_decay_type == "l2" else 0.0,
      no_weight_decay_on_bn=config.no_weight_decay_on_bn, label_smoothing=config.label_smoothing,
      ema_decay=config.ema_decay, ema_warmup_steps=config.ema_warmup_steps,
      redraw_masks=config.sam.redraw_masks, replica_mapping=replica_mapping(config),
      true_gradient_ascent=(config.sam.true_gradient_ascent and hasattr(model, "true_gradient")
                            and ascent_only(config.sam)), skip_nonfinite=config.nonfinite == "skip")
