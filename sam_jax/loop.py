"""The training run: validate and set up everything, then one loop of steps.

`train_and_evaluate(config, workdir)` is the whole run. `set_up` checks every input
(dataset, data on disk, model, replica layout, optimizer, `init_from`) and builds what
the loop needs, writing nothing; a bad input is a `UsageError` before anything exists.
Then the checkpoint manager resumes the workdir's latest checkpoint (one that does not
fit is refused and kept), `record_start` writes config.json (a run from scratch) or the
changes of a resumed one and drops the TensorBoard points it will compute again, and
`train` runs the steps from there: metrics to TensorBoard and the progress display every
`log_every_steps`, evaluation, checkpoints, and results.json at the end.
SIGTERM (what schedulers send before preempting) and Ctrl-C stop the loop after the
current step with a checkpoint of it (`Stopped`); the same command resumes from there.
"""

import dataclasses
import functools
import json
import os
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
from clu import metric_writers

from sam_jax import (checkpoints, console, evaluation, events, experiment, optim, pretrained,
                     processes, profiling, replicas, steps, validation)
from sam_jax import workdir as run_files
from sam_jax.data import pipeline
from sam_jax.data.augmentation import Augmentation
from sam_jax.data.datasets import get_dataset_info
from sam_jax.errors import Stopped, UsageError
from sam_jax.models.efficientnet import EfficientNet


@dataclasses.dataclass(frozen=True)
class SetUp:
  """Everything the loop needs, built and checked from the config before it starts."""
  layout: replicas.Layout
  mesh: jax.sharding.Mesh
  model: nn.Module
  data: experiment.RunData
  train_batches: Callable[..., Iterator]  # pipeline.train_batches of the run, from start_step=
  eval_batches: Callable[..., Iterator]  # pipeline.eval_batches of the run: (examples, num_batches)
  process_batch: int  # this process's share of the global batch
  steps_per_epoch: int
  total_steps: int
  tx: optax.GradientTransformationExtraArgs
  schedule: Callable[[int], jax.Array]  # jitted
  state: steps.TrainState  # freshly initialised (or pretrained), replicated on the mesh


def set_up(config: ml_collections.ConfigDict, workdir: str) -> SetUp:
  """Checks the config against the data, devices and checkpoints, and builds the run.

  Raises:
    UsageError: one line for anything the run cannot use; nothing has been written.
  """
  validation.check(config)
  info = get_dataset_info(config.dataset)
  augmentation = Augmentation.from_config(config)
  augmentation.check(info)
  layout = replicas.make_layout(config.batch_size, config.sam.m)
  replicas.check_group_size(layout, config.sam.sync_group_size)
  mesh = replicas.make_mesh(layout.num_devices)
  model = experiment.build_model(config, info.num_classes)
  data = experiment.load_run_data(config, info)
  steps_per_epoch = data.steps_per_epoch
  tx = optim.create_optimizer(config, steps_per_epoch, replicas.REPLICA_AXES)
  init_seed = config.seed if config.init_seed is None else config.init_seed
  state = steps.init_train_state(model, tx, jax.random.key(init_seed),
                                 experiment.image_shape(config, model, info), ema=config.ema_decay
                                 > 0, init_from=pretrained_init(config, model, workdir))
  process_batch = config.batch_size // jax.process_count()
  total_steps = optim.total_steps(config, steps_per_epoch)
  resize = dict(
      image_size=experiment.input_size(config, model, info), resize_method=config.resize_method)
  train_batches = functools.partial(pipeline.train_batches, info, data.train, process_batch,
                                    seed=config.seed, augmentation=augmentation,
                                    first_shard=data.shards.start, num_shards=data.num_shards,
                                    stop_step=total_steps, shuffle_buffer=config.shuffle_buffer,
                                    **resize)
  return SetUp(
      layout,
      mesh,
      model,
      data,
      train_batches,
      functools.partial(pipeline.eval_batches, info, batch_size=process_batch, **resize),
      process_batch,
      steps_per_epoch,
      total_steps,
      tx,
      jax.jit(optim.learning_rate_schedule(config, steps_per_epoch)),  # compiled once
      replicas.replicate(state, mesh))


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
  checkpoints.check_writable(workdir)
  manager = checkpoints.make_manager(workdir, config.keep_checkpoints, keep_steps)
  try:
    with processes.stop_signals() as stop_at:
      state = checkpoints.restore_latest(manager, run.state)
      record_start(config, workdir, int(state.step), run.total_steps)
      results = train(config, workdir, run, state, manager, keep_steps, stop_at)
  finally:
    checkpoints.close(manager)  # waits for the last save
  if jax.process_index() == 0:  # JSON has no NaN: a non-finite result is null
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({k: v if np.isfinite(v) else None for k, v in results.items()}, f, indent=2)
  return results


def record_start(config: ml_collections.ConfigDict, workdir: str, step: int,
                 total_steps: int) -> None:
  """What the workdir says of a run starting (`step` 0) or resuming at `step`: config.json
  for a run from scratch, the changes of a resumed one in config_changes.json; and
  TensorBoard points after `step` (at it, the evaluation's, if it is evaluated again)
  dropped, so that the curves show each step once.

  Raises:
    UsageError: for a checkpoint past the config's last step.
  """
  if step > total_steps:
    raise UsageError(f"The checkpoint in {workdir} is at step {step}, past the {total_steps} "
                     "steps this config asks for: ask for more (--config.num_epochs or "
                     "--config.num_train_steps), or analyse it (python -m sam_jax.analysis).")
  if jax.process_index() > 0:
    return
  if step == 0:
    run_files.write_config(config, workdir)
  elif changed := run_files.changes(config, workdir):
    run_files.record_changes(workdir, step, changed)
  dropped = events.drop_points(
      workdir, lambda tag, at: at > step or
      (at == step == total_steps and tag.startswith(evaluation.EVALUATED)))
  if dropped:
    logging.info("Dropped %d TensorBoard points after step %d: this run computes them again.",
                 dropped, step)


def log_start(config: ml_collections.ConfigDict, run: SetUp, start_step: int) -> None:
  logging.info(
      "%s on %s with %s in %s: %d replicas of m=%d (%d devices x %d virtual, %s), "
      "%d steps/epoch, %d steps, starting at %d.", config.model_name, config.dataset,
      f"SAM ({config.sam.variant}, rho {config.sam.rho:g})" if config.sam.rho else "no SAM (rho 0)",
      experiment.compute_dtype(config).name, run.layout.num_replicas,
      run.layout.examples_per_replica, run.layout.num_devices, run.layout.virtual_replicas,
      experiment.replica_mapping(config), run.steps_per_epoch, run.total_steps, start_step)


def train(config: ml_collections.ConfigDict, workdir: str, run: SetUp, state: steps.TrainState,
          manager: ocp.CheckpointManager, keep_steps: list[int],
          stop_at: Callable[[int], str | None]) -> dict[str, float]:
  """Steps from `state.step` to the end; evaluates and saves as the config asks.

  Raises:
    Stopped: once `stop_at(step)` names a signal, after saving that step.
  """
  train_step = steps.make_train_step(run.model, run.tx, run.mesh, run.layout,
                                     **experiment.train_step_options(config, run.model))
  eval_step = steps.make_eval_step(run.model, run.mesh, config.label_smoothing)
  param_norm = jax.jit(optax.tree_utils.tree_norm)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  start_step = int(state.step)
  log_start(config, run, start_step)
  batches = replicas.prefetch_to_devices(run.train_batches(start_step=start_step), run.mesh)
  rng, sam_schedule = jax.random.key(config.seed), optim.sam_schedule(config)
  last_save, pending, results = time.monotonic(), [], {}
  profiler = profiling.StepProfiler(workdir, start_step, config.profile_steps)
  with console.progress(run.total_steps, run.steps_per_epoch, start_step,
                        enabled=jax.process_index() == 0) as progress:
    for step in range(start_step + 1, run.total_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = train_step(state, next(batches), rng, sam_step=sam_schedule(step - 1))
      pending.append(metrics)
      profiler.after_step(step, state)
      progress.update(step)
      log_due = step % config.log_every_steps == 0 or step == run.total_steps
      eval_due = step == run.total_steps or evaluation.evaluation_due(config, step,
                                                                      run.steps_per_epoch)
      stop = stop_at(step)
      save_due = (
          stop or step in keep_steps or step == run.total_steps
          or (log_due and
              (processes.agree(time.monotonic() - last_save >= config.save_progress_seconds))))
      if log_due or eval_due or save_due:  # nothing non-finite is evaluated or saved
        check_finite(config, pending, step, run.total_steps, manager)
      if log_due:
        scalars = train_scalars(step, pending, param_norm(state.params), run.schedule(step - 1))
        if rate := progress.report(step, scalars):
          scalars["steps_per_sec"] = rate
        writer.write_scalars(step, scalars)
        pending = []
      if eval_due:
        results = evaluation.evaluate_all(config, run, eval_step, state, step, writer)
        progress.show(results)
      if save_due:
        checkpoints.save(manager, state)
        last_save = time.monotonic()
      if stop and step < run.total_steps:
        raise Stopped(f"stopped by {stop} at step {step} of {run.total_steps}, "
                      f"saved in {os.path.join(workdir, 'checkpoints')}; the same command "
                      "resumes from there.")
  profiler.close(state)
  if not results:  # resumed after the last step: evaluate what was restored
    results = evaluation.evaluate_all(config, run, eval_step, state, int(state.step), writer)
  writer.flush()
  results = {**results, "steps": int(state.step), "epochs": int(state.step) / run.steps_per_epoch}
  if run.data.realised_noise is not None:
    results["realised_label_noise"] = run.data.realised_noise
  return results


def check_finite(config: ml_collections.ConfigDict, pending: list[dict[str, jax.Array]], step: int,
                 total_steps: int, manager: ocp.CheckpointManager) -> None:
  """Stops the run at the first step of `pending` (the steps up to `step`) whose loss or
  gradient was NaN/Inf, unless the config skips such updates.

  Raises:
    UsageError: naming that step and the last good checkpoint.
  """
  if config.nonfinite == "skip":
    return
  flags = np.asarray(jax.device_get([m["nonfinite"] for m in pending]))
  if not flags.any():
    return
  bad = step - len(pending) + 1 + int(np.argmax(flags))
  manager.wait_until_finished()
  last = manager.latest_step()
  saved = (f"the last good checkpoint is step {last} in {manager.directory}"
           if last is not None else "no checkpoint was saved")
  raise UsageError(f"The loss or gradient became NaN/Inf at step {bad} of {total_steps}; "
                   f"nothing after it was saved ({saved}). Lower --config.learning_rate, clip "
                   "with --config.gradient_clipping, or skip such updates with "
                   "--config.nonfinite=skip.")


def train_scalars(step: int, pending: list[dict[str, jax.Array]], param_norm: jax.Array,
                  learning_rate: jax.Array) -> dict[str, float]:
  """Means over the pending steps whose update was applied; how many were skipped."""
  pending = jax.device_get(pending)
  kept = [m for m in pending if not m["nonfinite"]]
  means = {
      name: float(np.mean([m[name] for m in kept])) if kept else float("nan")
      for name in pending[0]
      if name != "nonfinite"
  }
  skipped = len(pending) - len(kept)
  if skipped:
    logging.warning(
        "Skipped %d of the %d updates up to step %d: NaN/Inf loss or gradient "
        "(config.nonfinite=skip).", skipped, len(pending), step)
  scalars = {name if "norm" in name else f"train_{name}": value for name, value in means.items()}
  scalars["skipped_steps"], scalars["param_norm"] = skipped, float(param_norm)
  scalars["learning_rate"] = float(learning_rate)
  return scalars
