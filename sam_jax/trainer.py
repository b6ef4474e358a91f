"""Training state and the per-replica SAM train and eval steps.

Each step is written for one replica (m examples) with collectives over
`replicas.REPLICA_AXES`; `replicas.map_replicas` turns it into one program over
devices and virtual replicas.
"""

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct

from sam_jax import checkpoints, optim, replicas
from sam_jax.models import get_model, input_resolution


class TrainState(struct.PyTreeNode):
  """Everything a training run carries from step to step (identical on all replicas)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any  # {"params", "batch_stats"} averaged with config.ema_decay, or {} when off


def init_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                     image_shape: tuple[int, ...], ema: bool = False,
                     init_from: Callable[[Any], Any] | None = None) -> TrainState:
  """Initialises parameters (float32), BatchNorm statistics, optimizer state and EMA.

  `init_from` maps the fresh variables to the ones to start from (pretrained weights).
  """
  variables = model.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
  if init_from is not None:
    variables = init_from(variables)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  # The EMA starts as a copy: the step donates the state, and a buffer can be donated once.
  ema = jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats}) if ema else {}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), ema=ema)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy against targets smoothed towards uniform.

  `labels` are class indices [n] or, after mixup, soft targets [n, classes].
  """
  targets = labels if labels.ndim == logits.ndim else jax.nn.one_hot(labels, logits.shape[-1])
  return optax.softmax_cross_entropy(logits, optax.smooth_labels(targets, label_smoothing))


def hard_labels(labels: jax.Array) -> jax.Array:
  """Class indices; soft (mixup) targets count as their larger class."""
  return jnp.argmax(labels, -1) if labels.ndim == 2 else labels


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               model: nn.Module, tx: optax.GradientTransformationExtraArgs,
               l2_weight_decay: float = 0.0, no_weight_decay_on_bn: bool = False,
               label_smoothing: float = 0.0, ema_decay: float = 0.0,
               replica_by_replica: bool = True,
               true_gradient_ascent: bool = False) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SAM step for one replica; call it through `replicas.map_replicas`.

  1. g = grad of this replica's loss (cross-entropy + optional 0.5 wd ||w||^2).
  2. `tx` (see `optim.create_optimizer`) perturbs w by eps(g), evaluates the same loss
     with the same dropout/shake randomness at w + eps, averages that gradient over all
     replicas, clips it and updates w (not w + eps).
  3. BatchNorm running statistics come from the clean pass only, averaged over the
     replicas (EMAs are linear, so this equals averaging them at evaluation time).

  Args:
    state: the replicated training state.
    batch: {"image": [m, H, W, C], "label": [m] or soft [m, classes]} for this replica.
    rng: the run's base key; folded with the step and the replica index.
    model, tx: the Flax model and the optimizer chain.
    l2_weight_decay: wd of the in-loss weight decay (0 when decay is decoupled).
    no_weight_decay_on_bn: exclude ndim <= 1 parameters from the in-loss decay.
    label_smoothing: smoothing of the one-hot targets.
    ema_decay: decay of the EMA of params and BatchNorm statistics (state.ema).
    replica_by_replica: evaluate the two gradient passes one virtual replica at a time
      (`replicas.one_replica_at_a_time`, fast); must be False when the model
      synchronises BatchNorm across replicas.
    true_gradient_ascent: take the clean (ascent) gradient of a shake model with the same
      gates forward and backward (`true_gradient=True`), so the perturbation follows the
      gradient of the function actually computed, as the original code did; the update
      gradient at w + eps keeps the shake gradient. Only meaningful with SAM on.

  Returns:
    The new state and metrics averaged over replicas.
  """
  rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), replicas.replica_index())
  decay_mask = optim.weight_decay_mask(state.params, no_weight_decay_on_bn)

  ascent_model = model.clone(true_gradient=True) if true_gradient_ascent else model

  def loss_fn(params, batch_stats, batch, rng, model=model):
    logits, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
        rngs={"dropout": rng}, mutable=["batch_stats"])
    data_loss = jnp.mean(cross_entropy(logits, batch["label"], label_smoothing))
    loss = data_loss + optim.l2_penalty(params, l2_weight_decay, decay_mask)
    return loss, (data_loss, logits, mutated.get("batch_stats", {}))

  clean_pass = jax.value_and_grad(functools.partial(loss_fn, model=ascent_model), has_aux=True)
  sam_pass = jax.grad(lambda *args: loss_fn(*args)[0])
  if replica_by_replica:
    clean_pass, sam_pass = map(replicas.one_replica_at_a_time, (clean_pass, sam_pass))
  (_, (data_loss, logits, batch_stats)), grads = clean_pass(
      state.params, state.batch_stats, batch, rng)
  grad_fn = lambda params: sam_pass(params, state.batch_stats, batch, rng)
  updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "loss": data_loss,
      "error": jnp.mean(jnp.argmax(logits, -1) != hard_labels(batch["label"])),
      "grad_norm": optax.tree_utils.tree_norm(grads),
  }
  batch_stats, metrics = jax.lax.pmean((batch_stats, metrics), replicas.REPLICA_AXES)
  ema = state.ema
  if ema:
    ema = jax.tree.map(lambda old, new: ema_decay * old + (1.0 - ema_decay) * new,
                       ema, {"params": params, "batch_stats": batch_stats})
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema=ema)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              model: nn.Module) -> dict[str, jax.Array]:
  """Sums of loss, errors and examples over all replicas; padded examples have mask 0."""
  logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                       batch["image"], train=False)
  mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  sums = {
      "loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
      "error": jnp.sum((jnp.argmax(logits, -1) != batch["label"]) * mask),
      "top5_error": jnp.sum(jnp.all(top5 != batch["label"][:, None], axis=-1) * mask),
      "count": jnp.sum(mask),
  }
  return jax.lax.psum(sums, replicas.REPLICA_AXES)


def make_train_step(model: nn.Module, tx: optax.GradientTransformationExtraArgs, mesh,
                    layout: replicas.Layout, **loss_kwargs):
  """The jitted global train step: (state, global batch, rng) -> (state, metrics)."""
  step = functools.partial(train_step, model=model, tx=tx, **loss_kwargs)
  return replicas.map_replicas(step, mesh, layout.virtual_replicas, donate_state=True)


def make_eval_step(model: nn.Module, mesh):
  """The jitted global eval step: (state, global batch) -> summed metrics."""
  return replicas.map_replicas(functools.partial(eval_step, model=model), mesh)


def evaluate(eval_step, state: TrainState, batches, mesh) -> dict[str, float]:
  """Mean loss, error and top-5 error over every (unpadded) example of `batches`."""
  totals = None
  for batch in batches:
    sums = eval_step(state, replicas.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.tree.map(float, totals)
  count = totals.pop("count")
  return {**{name: value / count for name, value in totals.items()}, "count": count}


def evaluation_due(config: ml_collections.ConfigDict, step: int, steps_per_epoch: int) -> bool:
  """Every `eval_every_steps` steps when set, else every `evaluate_every` epochs."""
  if config.get("eval_every_steps"):
    return step % config.eval_every_steps == 0
  epoch, epoch_done = divmod(step, steps_per_epoch)
  return epoch_done == 0 and epoch % config.evaluate_every == 0


def pretrained_init(config: ml_collections.ConfigDict, model: nn.Module,
                    workdir: str) -> Callable[[Any], Any] | None:
  """Loads `config.init_from` into fresh variables, unless the workdir has a checkpoint.

  The order is resume -> pretrained -> scratch: a finetuning run restarted after a
  preemption continues from its own checkpoint.
  """
  if not config.get("init_from"):
    return None
  if checkpoints.has_checkpoint(workdir):
    logging.info("Resuming from %s; init_from %s is not read.", workdir, config.init_from)
    return None
  from sam_jax import pretrained  # pylint: disable=import-outside-toplevel

  def load(variables):
    if not isinstance(model, pretrained.efficientnet.EfficientNet):
      raise ValueError(f"init_from loads EfficientNet checkpoints; {config.model_name} is not "
                       "one (choose efficientnet-b0..b8, -l2 or -l2-475).")
    loaded = pretrained.load(config.init_from, model, variables,
                             use_ema=config.get("init_from_ema", True))
    logging.info("Initialised %s from %s.", config.model_name, config.init_from)
    return loaded
  return load


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The config's model, with its BatchNorm and skip-connection options."""
  model_kwargs = {"bn_axis_name": replicas.REPLICA_AXES} if config.sync_batch_norm else {}
  if config.get("use_additional_skip_connections"):
    model_kwargs["additional_skip_connections"] = True
  if config.get("freeze_batch_norm"):
    model_kwargs["frozen_batch_norm"] = True
  return get_model(config.model_name, num_classes, dtype=jnp.dtype(config.dtype),
                   **model_kwargs)


def input_size(config: ml_collections.ConfigDict, model: nn.Module, info) -> int | None:
  """The side images are resized or cropped to: the config's, the model's (EfficientNet),
  the dataset's default (JPEG datasets: 224), or None to keep the images as they are."""
  return config.image_size or input_resolution(model) or info.default_image_size


def noisy_labels(config: ml_collections.ConfigDict, info, examples):
  """The training examples with the config's label noise, and the realised noise rate.

  Returns (examples, None) without noise. The noise is a function of the seed and the
  images, so the analyses see the labels a run was trained on.
  """
  if not config.label_noise:
    return examples, None
  from sam_jax.data import label_noise  # pylint: disable=import-outside-toplevel
  if info.streamed:
    raise ValueError(f"label_noise needs an in-memory dataset such as cifar10, not "
                     f"{config.dataset}.")
  examples, realised = label_noise.symmetric_noise(
      examples, config.label_noise, info.num_classes, config.label_noise_seed)
  logging.info("Label noise: %.4f of this process's %d training labels changed (asked %.2f).",
               realised, len(examples["label"]), config.label_noise)
  return examples, realised


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns results.

  Writes TensorBoard events, config.json, checkpoints/ and, at the end, results.json.
  Everything that can be wrong with the input (dataset, model, batch layout, data on
  disk, checkpoint) is checked before anything is written.
  """
  # The pipeline and clu's writers import TensorFlow; the steps above must not need it.
  from clu import metric_writers, periodic_actions
  from sam_jax.data import pipeline

  workdir = os.path.abspath(workdir)  # Orbax wants absolute paths
  info = pipeline.get_dataset_info(config.dataset)
  augmentation = pipeline.Augmentation.from_config(config)
  augmentation.check(info)
  layout = replicas.make_layout(config.batch_size, config.sam.m)
  mesh = replicas.make_mesh(layout.num_devices)
  model = build_model(config, info.num_classes)
  image_size = input_size(config, model, info)
  image_shape = (image_size, image_size, info.image_shape[-1]) if image_size else info.image_shape
  train_split, eval_split = pipeline.split_names(info, config.use_test_set)
  train_examples = pipeline.load_split(info, pipeline.process_split(train_split), config.data_dir)
  eval_examples = pipeline.load_split(info, pipeline.process_split(eval_split), config.data_dir)
  # Noise on the training labels only: evaluation stays clean.
  train_examples, realised_noise = noisy_labels(config, info, train_examples)
  process_batch = config.batch_size // jax.process_count()
  steps_per_epoch = pipeline.num_examples(train_examples) // process_batch
  if steps_per_epoch == 0:
    raise ValueError(f"The batch of {config.batch_size} is larger than the "
                     f"{pipeline.num_examples(train_examples)} training examples of "
                     f"{config.dataset}.")
  total_steps = optim.total_steps(config, steps_per_epoch)
  tx = optim.create_optimizer(config, steps_per_epoch, replicas.REPLICA_AXES)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch)
  state = replicas.replicate(
      init_train_state(model, tx, jax.random.key(config.seed), image_shape,
                       ema=config.ema_decay > 0,
                       init_from=pretrained_init(config, model, workdir)), mesh)
  keep_steps = [e * steps_per_epoch for e in config.additional_checkpoints_at_epochs]
  manager = checkpoints.make_manager(workdir, config.keep_checkpoints, keep_steps)
  state = checkpoints.restore_latest(manager, state)
  start_step = int(state.step)

  train_step = make_train_step(
      model, tx, mesh, layout,
      l2_weight_decay=config.weight_decay if config.weight_decay_type == "l2" else 0.0,
      no_weight_decay_on_bn=config.no_weight_decay_on_bn,
      label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
      replica_by_replica=not config.sync_batch_norm,
      true_gradient_ascent=(config.sam.rho > 0 and hasattr(model, "true_gradient")
                            and config.sam.get("true_gradient_ascent", True)))
  eval_step = make_eval_step(model, mesh)
  param_norm = jax.jit(optax.tree_utils.tree_norm)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  logging.info("%s on %s: %d replicas of m=%d (%d devices x %d virtual), %d steps/epoch, "
               "%d steps, starting at %d.", config.model_name, config.dataset,
               layout.num_replicas, layout.examples_per_replica, layout.num_devices,
               layout.virtual_replicas, steps_per_epoch, total_steps, start_step)

  def evaluate_all(step: int) -> dict[str, float]:
    splits = {"test": eval_examples}
    if config.also_eval_on_training_set:
      splits["train_eval"] = train_examples
    models = {"": state}
    if state.ema:
      models["ema_"] = state.replace(**state.ema)
    results = {}
    for split, examples in splits.items():
      for prefix, evaluated in models.items():
        metrics = evaluate(eval_step, evaluated,
                           pipeline.eval_batches(info, examples, process_batch, image_size),
                           mesh)
        for name in ("loss", "error") + (("top5_error",) if config.compute_top_5_error_rate else ()):
          results[f"{prefix}{split}_{name}"] = metrics[name]
      results[f"{split}_examples"] = metrics["count"]  # examples scored: the split's size
    writer.write_scalars(step, results)
    logging.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results

  batches = pipeline.train_batches(
      info, train_examples, process_batch, seed=config.seed, start_step=start_step,
      augmentation=augmentation, image_size=image_size)
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  rng = jax.random.key(config.seed)
  last_save, pending, results = time.monotonic(), [], {}
  for step in range(start_step + 1, total_steps + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = train_step(state, replicas.shard_batch(next(batches), mesh), rng)
    pending.append(metrics)
    progress(step)
    if step % config.log_every_steps == 0 or step == total_steps:
      means = jax.tree.map(lambda *xs: float(np.mean(xs)), *pending)
      writer.write_scalars(step, {
          "train_loss": means["loss"], "train_error": means["error"],
          "grad_norm": means["grad_norm"], "param_norm": float(param_norm(state.params)),
          "learning_rate": float(schedule(step - 1))})
      pending = []
    if step == total_steps or evaluation_due(config, step, steps_per_epoch):
      results = evaluate_all(step)
    if (step in keep_steps or step == total_steps
        or time.monotonic() - last_save >= config.save_progress_seconds):
      checkpoints.save(manager, state)
      last_save = time.monotonic()
  manager.close()  # waits for the last save
  if not results:  # resumed after the last step: evaluate what was restored
    results = evaluate_all(int(state.step))
  results = {**results, "steps": int(state.step), "epochs": int(state.step) / steps_per_epoch}
  if realised_noise is not None:
    results["realised_label_noise"] = realised_noise
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  writer.flush()
  return results
