"""The training run: validate and set up everything, then one loop of steps.

`train_and_evaluate(config, workdir)` is the whole run. `set_up` checks every input
(dataset, data on disk, model, replica layout, optimizer, `init_from`) and builds what
the loop needs, writing nothing; a bad input is a `UsageError` before anything exists.
Then the checkpoint manager resumes the workdir's latest checkpoint (one that does not
fit is refused and kept), and `train` runs the steps from there: metrics to TensorBoard
every `log_every_steps`, evaluation, checkpoints, and results.json at the end.
SIGTERM (what schedulers send before preempting) and Ctrl-C stop the loop after the
current step with a checkpoint of it (`Stopped`); the same command resumes from there.
"""

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions

from sam_jax import checkpoints, experiment, optim, pretrained, replicas, steps
from sam_jax.data import loading, pipeline
from sam_jax.data.augmentation import Augmentation
from sam_jax.data.datasets import DatasetInfo, get_dataset_info
from sam_jax.errors import Stopped, UsageError
from sam_jax.models.efficientnet import EfficientNet


@contextlib.contextmanager
def stop_signals() -> Iterator[Callable[[], str | None]]:
  """While inside, SIGTERM and SIGINT only ask to stop: yields a function giving the
  signal's name once one arrived (None before). A second Ctrl-C stops at once. Outside
  the main thread (where Python cannot install handlers) nothing changes.
  """
  received = []

  def ask_to_stop(signum, frame):
    if received and signum == signal.SIGINT:
      raise KeyboardInterrupt
    received.append(signal.Signals(signum).name)

  try:
    previous = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGTERM, signal.SIGINT)}
  except ValueError:  # not the main thread
    previous = {}
  try:
    yield lambda: received[0] if received else None
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


@dataclasses.dataclass(frozen=True)
class SetUp:
  """Everything the loop needs, built and checked from the config before it starts."""
  info: DatasetInfo
  augmentation: Augmentation
  layout: replicas.Layout
  mesh: jax.sharding.Mesh
  model: nn.Module
  image_size: int | None
  train_examples: Any
  eval_examples: Any
  realised_noise: float | None
  process_batch: int  # this process's share of the global batch
  steps_per_epoch: int
  total_steps: int
  tx: optax.GradientTransformationExtraArgs
  schedule: optax.Schedule
  state: steps.TrainState  # freshly initialised (or pretrained), replicated on the mesh


def set_up(config: ml_collections.ConfigDict, workdir: str) -> SetUp:
  """Checks the config against the data, devices and checkpoints, and builds the run.

  Raises:
    UsageError: one line for anything the run cannot use; nothing has been written.
  """
  info = get_dataset_info(config.dataset)
  augmentation = Augmentation.from_config(config)
  augmentation.check(info)
  layout = replicas.make_layout(config.batch_size, config.sam.m)
  replicas.check_group_size(layout, config.sam.sync_group_size)
  mesh = replicas.make_mesh(layout.num_devices)
  model = experiment.build_model(config, info.num_classes)
  train_examples, realised_noise = experiment.load_examples(config, info, "train")
  eval_examples, _ = experiment.load_examples(config, info, "eval")
  process_batch = config.batch_size // jax.process_count()
  steps_per_epoch = loading.num_examples(train_examples) // process_batch
  if steps_per_epoch == 0:
    raise UsageError(f"The batch of {config.batch_size} is larger than the "
                     f"{loading.num_examples(train_examples)} training examples of "
                     f"{config.dataset}: use a smaller --config.batch_size.")
  tx = optim.create_optimizer(config, steps_per_epoch, replicas.REPLICA_AXES)
  state = steps.init_train_state(
      model, tx, jax.random.key(config.seed), experiment.image_shape(config, model, info),
      ema=config.ema_decay > 0, init_from=pretrained_init(config, model, workdir))
  return SetUp(info, augmentation, layout, mesh, model,
               experiment.input_size(config, model, info), train_examples, eval_examples,
               realised_noise, process_batch, steps_per_epoch,
               optim.total_steps(config, steps_per_epoch), tx,
               optim.learning_rate_schedule(config, steps_per_epoch),
               replicas.replicate(state, mesh))


def pretrained_init(config: ml_collections.ConfigDict, model: nn.Module,
                    workdir: str) -> Callable[[Any], Any] | None:
  """Loads `config.init_from` into fresh variables, unless the workdir has a checkpoint.

  The order is resume -> pretrained -> scratch: a finetuning run restarted after a
  preemption continues from its own checkpoint.
  """
  if not config.init_from:
    return None
  if checkpoints.has_checkpoint(workdir):
    logging.info("Resuming from %s; init_from %s is not read.", workdir, config.init_from)
    return None
  if not isinstance(model, EfficientNet):
    raise UsageError(f"init_from loads EfficientNet checkpoints; {config.model_name} is not "
                     "one (choose efficientnet-b0..b8, -l2 or -l2-475).")
  pretrained.detect_format(config.init_from)  # a missing file: refused before initialising

  def load(variables):
    loaded = pretrained.load(config.init_from, model, variables, use_ema=config.init_from_ema)
    logging.info("Initialised %s from %s.", config.model_name, config.init_from)
    return loaded
  return load


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns results.

  Writes TensorBoard events, config.json, checkpoints/ and, at the end, results.json.

  Raises:
    UsageError: before anything is written, for input the run cannot use; or, with the
      workdir untouched, for a checkpoint that does not fit the config.
    Stopped: on SIGTERM or Ctrl-C, after saving a checkpoint of the last step.
  """
  workdir = os.path.abspath(workdir)  # Orbax wants absolute paths
  run = set_up(config, workdir)
  keep_steps = [e * run.steps_per_epoch for e in config.additional_checkpoints_at_epochs]
  manager = checkpoints.make_manager(workdir, config.keep_checkpoints, keep_steps)
  try:
    with stop_signals() as stop_requested:
      state = checkpoints.restore_latest(manager, run.state)
      results = train(config, workdir, run, state, manager, keep_steps, stop_requested)
  finally:
    manager.close()  # waits for the last save
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results


def train_step_options(config: ml_collections.ConfigDict, model: nn.Module) -> dict[str, Any]:
  """The loss and step options of `steps.train_step` that the config sets."""
  return dict(
      l2_weight_decay=config.weight_decay if config.weight_decay_type == "l2" else 0.0,
      no_weight_decay_on_bn=config.no_weight_decay_on_bn,
      label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
      ema_warmup_steps=config.ema_warmup_steps, redraw_masks=config.sam.redraw_masks,
      replica_by_replica=not config.sync_batch_norm,
      true_gradient_ascent=(config.sam.rho > 0 and hasattr(model, "true_gradient")
                            and config.sam.true_gradient_ascent))


def train(config: ml_collections.ConfigDict, workdir: str, run: SetUp, state: steps.TrainState,
          manager: ocp.CheckpointManager, keep_steps: list[int],
          stop_requested: Callable[[], str | None]) -> dict[str, float]:
  """Steps from `state.step` to the end; evaluates and saves as the config asks.

  Raises:
    Stopped: once `stop_requested()` names a signal, after saving the step just taken.
  """
  train_step = steps.make_train_step(run.model, run.tx, run.mesh, run.layout,
                                     **train_step_options(config, run.model))
  eval_step = steps.make_eval_step(run.model, run.mesh, config.label_smoothing)
  param_norm = jax.jit(optax.tree_utils.tree_norm)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  start_step = int(state.step)
  logging.info("%s on %s: %d replicas of m=%d (%d devices x %d virtual), %d steps/epoch, "
               "%d steps, starting at %d.", config.model_name, config.dataset,
               run.layout.num_replicas, run.layout.examples_per_replica,
               run.layout.num_devices, run.layout.virtual_replicas, run.steps_per_epoch,
               run.total_steps, start_step)
  batches = pipeline.train_batches(
      run.info, run.train_examples, run.process_batch, seed=config.seed,
      start_step=start_step, augmentation=run.augmentation, image_size=run.image_size)
  progress = periodic_actions.ReportProgress(num_train_steps=run.total_steps, writer=writer)
  rng = jax.random.key(config.seed)
  last_save, pending, results = time.monotonic(), [], {}
  for step in range(start_step + 1, run.total_steps + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = train_step(state, replicas.shard_batch(next(batches), run.mesh), rng)
    pending.append(metrics)
    progress(step)
    if step % config.log_every_steps == 0 or step == run.total_steps:
      means = jax.tree.map(lambda *xs: float(np.mean(xs)), *pending)
      writer.write_scalars(step, {
          **{f"train_{name}": value for name, value in means.items() if "norm" not in name},
          **{name: value for name, value in means.items() if "norm" in name},
          "param_norm": float(param_norm(state.params)),
          "learning_rate": float(run.schedule(step - 1))})
      pending = []
    if step == run.total_steps or evaluation_due(config, step, run.steps_per_epoch):
      results = evaluate_all(config, run, eval_step, state, step, writer)
    stop = stop_requested()
    if (stop or step in keep_steps or step == run.total_steps
        or time.monotonic() - last_save >= config.save_progress_seconds):
      checkpoints.save(manager, state)
      last_save = time.monotonic()
    if stop and step < run.total_steps:
      raise Stopped(f"stopped by {stop} at step {step} of {run.total_steps}, "
                    f"saved in {os.path.join(workdir, 'checkpoints')}; the same command "
                    "resumes from there.")
  if not results:  # resumed after the last step: evaluate what was restored
    results = evaluate_all(config, run, eval_step, state, int(state.step), writer)
  writer.flush()
  results = {**results, "steps": int(state.step),
             "epochs": int(state.step) / run.steps_per_epoch}
  if run.realised_noise is not None:
    results["realised_label_noise"] = run.realised_noise
  return results


def evaluation_due(config: ml_collections.ConfigDict, step: int, steps_per_epoch: int) -> bool:
  """Every `eval_every_steps` steps when set, else every `evaluate_every` epochs."""
  if config.eval_every_steps:
    return step % config.eval_every_steps == 0
  epoch, epoch_done = divmod(step, steps_per_epoch)
  return epoch_done == 0 and epoch % config.evaluate_every == 0


def evaluate(eval_step, state: steps.TrainState, batches, mesh) -> dict[str, float]:
  """Mean loss, error and top-5 error over every (unpadded) example of `batches`."""
  totals = None
  for batch in batches:
    sums = eval_step(state, replicas.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  totals = jax.tree.map(float, totals)
  count = totals.pop("count")
  return {**{name: value / count for name, value in totals.items()}, "count": count}


def evaluate_all(config: ml_collections.ConfigDict, run: SetUp, eval_step,
                 state: steps.TrainState, step: int, writer) -> dict[str, float]:
  """The test split (and the training set, if asked).

  With an EMA, the metrics without prefix are the EMA model's (what the original
  reported) and `raw_` ones the trained weights'.
  """
  splits = {"test": run.eval_examples}
  if config.also_eval_on_training_set:
    splits["train_eval"] = run.train_examples
  models = {"": state.replace(**state.ema), "raw_": state} if state.ema else {"": state}
  names = (("loss", "error") + (("top5_error",) if config.compute_top_5_error_rate else ())
           + (("smoothed_loss",) if config.label_smoothing else ()))
  results = {}
  for split, examples in splits.items():
    for prefix, evaluated in models.items():
      batches = pipeline.eval_batches(run.info, examples, run.process_batch, run.image_size)
      metrics = evaluate(eval_step, evaluated, batches, run.mesh)
      results.update({f"{prefix}{split}_{name}": metrics[name] for name in names})
    results[f"{split}_examples"] = metrics["count"]  # examples scored: the split's size
  writer.write_scalars(step, results)
  logging.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
  return results
