"""A training run's set-up: the config read once and turned into everything the loop needs.

`set_up(config, workdir)` checks every input (dataset, data on disk, model, replica layout,
optimizer, `init_from`) and builds the `Run`: the model and its state, the data streams,
the compiled steps, the SAM variant's schedule, the evaluation plan and the policies for
logging, checkpoints and non-finite steps. The loop (`loop.py`) and evaluation take the
`Run`; nothing after `set_up` reads the config. The model a config names is also rebuilt
here for the analyses (`build_model`, `image_shape`).
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from sam_jax import (evaluation, optim, predictive, pretrained, replicas, run_files, steps,
                     validation)
from sam_jax.data import loading, pipeline, run_data
from sam_jax.data.augmentation import Augmentation
from sam_jax.data.datasets import DatasetInfo, get_dataset_info
from sam_jax.family import registry
from sam_jax.models import get_model, input_resolution


@dataclasses.dataclass(frozen=True)
class Policy:
  """How the loop logs, saves and treats a non-finite step."""
  log_every_steps: int
  profile_steps: int  # > 0: a profile trace of this many steps
  save_progress_seconds: float  # a checkpoint once this long has passed (at a log step)
  keep_checkpoints: int  # the latest this many are kept...
  keep_steps: tuple[int, ...]  # ...and those at these steps
  skip_nonfinite: bool  # skip a NaN/Inf update (else stop the run)


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything the loop and evaluation need, built and checked from the config."""
  description: str  # what trains, for the start line
  mesh: jax.sharding.Mesh
  data: run_data.RunData
  train_batches: Callable[..., Iterator[Any]]  # this process's batches, from start_step=
  steps_per_epoch: int
  total_steps: int
  schedule: Callable[[int], jax.Array]  # the learning rate, jitted
  state: steps.TrainState  # freshly initialised (or pretrained), replicated on the mesh
  train_step: steps.GlobalTrainStep
  rng: jax.Array  # the train step's base key
  second_pass: Callable[[int], bool | None]  # the variant's host schedule (`registry`)
  evaluation: evaluation.Plan
  policy: Policy


def set_up(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Checks the config against the data, devices and checkpoints, and builds the run.

  Raises:
    UsageError: one line for anything the run cannot use; nothing has been written.
  """
  validation.check(config)
  info = get_dataset_info(config.dataset, config.normalization)
  augmentation = Augmentation.from_config(config)
  augmentation.check(info)
  paired = registry.paired_batches(config.sam)
  layout = replicas.make_layout(config.batch_size, config.sam.m, paired=paired)
  replicas.check_group_size(layout, config.sam.sync_group_size)
  mesh = replicas.make_mesh(layout.num_devices)
  model = build_model(config, info.num_classes)
  data = run_data.load_run_data(config, info)
  tx = optim.create_optimizer(config, data.steps_per_epoch, replicas.REPLICA_AXES)
  init_seed = config.seed if config.init_seed is None else config.init_seed
  state = steps.init_train_state(model, tx, jax.random.key(init_seed),
                                 image_shape(config, model, info), ema=config.ema_decay > 0,
                                 init_from=pretrained_init(config, model, workdir))
  process_batch = config.batch_size // jax.process_count()
  total_steps = optim.total_steps(config, data.steps_per_epoch)
  resize = dict(image_size=input_size(config, model, info), resize_method=config.resize_method)
  train_batches = functools.partial(pipeline.train_batches, info, data.train, process_batch,
                                    seed=config.seed, augmentation=augmentation,
                                    first_shard=data.shards.start, num_shards=data.num_shards,
                                    stop_step=total_steps, shuffle_buffer=config.shuffle_buffer,
                                    **resize)
  if paired:
    train_batches = functools.partial(paired_batches, train_batches, layout.examples_per_replica)
  eval_batches = functools.partial(pipeline.eval_batches, info, batch_size=process_batch, **resize)
  return Run(
      description(config, layout),
      mesh,
      data,
      train_batches,
      data.steps_per_epoch,
      total_steps,
      jax.jit(optim.learning_rate_schedule(config, data.steps_per_epoch)),  # compiled once
      replicas.replicate(state, mesh),
      steps.make_train_step(model, tx, mesh, layout, **train_step_options(config, model)),
      jax.random.key(config.seed),
      registry.second_pass_schedule(config.sam, config.seed, total_steps),
      evaluation_plan(config, model, mesh, data, eval_batches),
      Policy(config.log_every_steps, config.profile_steps, config.save_progress_seconds,
             config.keep_checkpoints,
             tuple(e * data.steps_per_epoch for e in config.additional_checkpoints_at_epochs),
             config.nonfinite == "skip"))


def paired_batches(train_batches: Callable[..., Iterator[Any]], m: int,
                   start_step: int = 0) -> Iterator[Any]:
  """The batches from `start_step` on, each with the one before it (`replicas.paired_batches`);
  a resumed run reads from the step before."""
  return replicas.paired_batches(
      train_batches(start_step=max(start_step - 1, 0)), m, first_is_new=start_step == 0)


def description(config: ml_collections.ConfigDict, layout: replicas.Layout) -> str:
  """Model, dataset, optimizer, dtype and replicas: the run's start line."""
  s = config.sam
  sam = f"{s.variant} (rho {s.rho:g})" if s.rho else "no SAM (rho 0)"
  mapping = replicas.resolve_mapping(config.replica_mapping, config.sync_batch_norm)
  return (f"{config.model_name} on {config.dataset} with {sam} over {config.optimizer} in "
          f"{compute_dtype(config).name}: {layout.num_replicas} replicas of "
          f"m={layout.examples_per_replica} ({layout.num_devices} devices x "
          f"{layout.virtual_replicas} virtual, {mapping})")


def evaluation_plan(config: ml_collections.ConfigDict, model: nn.Module, mesh: jax.sharding.Mesh,
                    data: run_data.RunData, batches) -> evaluation.Plan:
  """The test split (and the training set with `also_eval_on_training_set`), the metrics
  the config asks for, and when."""
  splits = {"test": (data.eval, data.eval_steps)}
  if config.also_eval_on_training_set:
    train = loading.concatenate(data.train)
    splits["train_eval"] = (train, data.train_eval_steps)
  metrics = ("loss", "error") + (("top5_error",) if config.compute_top_5_error_rate else
                                 ()) + (("smoothed_loss",) if config.label_smoothing else ())
  sample = registry.posterior(config.sam, data.steps_per_epoch * config.batch_size)
  return evaluation.Plan(
      steps.make_eval_step(model, mesh, config.label_smoothing,
                           config.loss), mesh, batches, splits, metrics,
      registry.evaluated(config.sam), config.eval_every_steps, config.evaluate_every,
      data.steps_per_epoch, None if sample is None else predictive.make_predictive_eval_step(
          model, mesh, sample, config.sam.bsam_predictive_samples))


def pretrained_init(config: ml_collections.ConfigDict, model: nn.Module,
                    workdir: str) -> Callable[[Any], Any] | None:
  """Loads `config.init_from` into fresh variables, unless the workdir has a checkpoint.

  The order is resume -> pretrained -> scratch: a finetuning run restarted after a
  preemption continues from its own checkpoint.
  """
  if not config.init_from:
    return None
  if run_files.latest_checkpoint_step(workdir) is not None:
    logging.info("Resuming from %s; init_from %s is not read.", workdir, config.init_from)
    return None
  # A missing file, or one of another family: refused before initialising.
  pretrained.check_family(config.init_from, model)

  def load(variables):
    loaded = pretrained.load(config.init_from, model, variables, use_ema=config.init_from_ema)
    logging.info("Initialised %s from %s.", config.model_name, config.init_from)
    return loaded

  return load


def train_step_options(config: ml_collections.ConfigDict, model: nn.Module) -> dict[str, Any]:
  """The loss and step options of `steps.train_step` that the config sets."""
  return dict(
      l2_weight_decay=config.weight_decay if optim.weight_decay_type(config) == "l2" else 0.0,
      no_weight_decay_on_bn=config.no_weight_decay_on_bn,
      decay_kernels_only=config.weight_decay_kernels_only, label_smoothing=config.label_smoothing,
      loss=config.loss, ema_decay=config.ema_decay, ema_warmup_steps=config.ema_warmup_steps,
      redraw_masks=config.sam.redraw_masks, replica_mapping=replicas.resolve_mapping(
          config.replica_mapping,
          config.sync_batch_norm), true_gradient_ascent=(config.sam.true_gradient_ascent
                                                         and hasattr(model, "true_gradient")
                                                         and registry.ascent_only(config.sam)),
      skip_nonfinite=config.nonfinite == "skip", evaluated_params=registry.evaluated(config.sam),
      clean_gradient=registry.clean_gradient(config.sam))


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The config's model, with its BatchNorm, skip-connection and dropout options."""
  options = {}
  if config.sync_batch_norm:
    options["bn_axis_name"] = replicas.REPLICA_AXES
  if config.use_additional_skip_connections:
    options["additional_skip_connections"] = True
  if config.freeze_batch_norm:
    options["frozen_batch_norm"] = True
  if config.dropout_rate is not None:
    options["dropout_rate"] = config.dropout_rate
  if config.classifier is not None:
    options["classifier"] = config.classifier
  if config.head_bias_init:
    options["head_bias_init"] = config.head_bias_init
  return get_model(config.model_name, num_classes, dtype=compute_dtype(config), **options)


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """config.dtype; "auto": bfloat16 on accelerators, float32 on CPU (whose bfloat16
  convolutions are emulated, and slower)."""
  if config.dtype == "auto":
    return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
  return jnp.dtype(config.dtype)


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
