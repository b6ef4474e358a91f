"""The training run: set up from the config, then one loop of steps.

`train_and_evaluate(config, workdir)` is the whole run. `run_setup.set_up` checks every
input and builds the `Run`, writing nothing; a bad input is a `UsageError` before anything
exists. Then the checkpoint manager resumes the workdir's latest checkpoint (one that does
not fit is refused and kept), `record_start` writes config.json (a run from scratch) or the
changes of a resumed one and drops the TensorBoard points it will compute again, and
`train` runs the steps from there, reading the `Run` and never the config: metrics to
TensorBoard and the progress display every `log_every_steps`, evaluation, checkpoints,
and results.json at the end. SIGTERM (what schedulers send before preempting) and Ctrl-C
stop the loop after the current step with a checkpoint of it (`Stopped`); the same
command resumes from there.
"""

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers

from sam_jax import (checkpoints, console, evaluation, events, processes, profiling, replicas,
                     run_files, run_setup, steps)
from sam_jax.errors import Stopped, UsageError


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns results.

  Writes TensorBoard events, config.json, checkpoints/ and, at the end, results.json.

  Raises:
    UsageError: before anything is written, for input the run cannot use; or, with the
      workdir untouched, for a checkpoint that does not fit the config.
    Stopped: on SIGTERM or Ctrl-C, after saving a checkpoint of the last step.
  """
  workdir = os.path.abspath(workdir)  # Orbax wants absolute paths
  run = run_setup.set_up(config, workdir)
  checkpoints.save_whole_replicas()
  checkpoints.check_writable(workdir)
  with owned(workdir):
    manager = checkpoints.make_manager(workdir, run.policy.keep_checkpoints,
                                       list(run.policy.keep_steps))
    try:
      with processes.stop_signals() as stop_at:
        state = checkpoints.restore_latest(manager, run.state)
        record_start(config, workdir, int(state.step), run.total_steps)
        results = train(run, workdir, state, manager, stop_at)
    finally:
      checkpoints.close(manager)  # waits for the last save
    if jax.process_index() == 0:  # JSON has no NaN: a non-finite result is null
      finite = {k: v if np.isfinite(v) else None for k, v in results.items()}
      run_files.write_json(workdir, run_files.RESULTS, finite)
  return results


@contextlib.contextmanager
def owned(workdir: str) -> Iterator[None]:
  """The run's hold on its workdir (`run_files.own`), taken by process 0 for all: every
  process refuses when another run holds it."""
  with contextlib.ExitStack() as stack:
    refusal = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(run_files.own(workdir))
      except UsageError as e:
        refusal = e
    if not processes.agree(refusal is None):
      raise refusal or UsageError(f"{workdir} is in use by another run (process 0 says which).")
    yield


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


def train(run: run_setup.Run, workdir: str, state: steps.TrainState, manager: ocp.CheckpointManager,
          stop_at: Callable[[int], str | None]) -> dict[str, float]:
  """Steps from `state.step` to the end; evaluates and saves as the run's policy says.

  Raises:
    Stopped: once `stop_at(step)` names a signal, after saving that step.
  """
  policy, param_norm = run.policy, jax.jit(optax.tree_utils.tree_norm)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  start_step = int(state.step)
  logging.info("%s, %d steps/epoch, %d steps, starting at %d.", run.description,
               run.steps_per_epoch, run.total_steps, start_step)
  batches = replicas.prefetch_to_devices(run.train_batches(start_step=start_step), run.mesh)
  last_save, pending, results, compiled = time.monotonic(), [], {}, set()
  profiler = profiling.StepProfiler(workdir, start_step, policy.profile_steps)
  with console.progress(run.total_steps, run.steps_per_epoch, start_step,
                        enabled=jax.process_index() == 0) as progress:
    for step in range(start_step + 1, run.total_steps + 1):
      kind = run.second_pass(step - 1)  # a program per kind of step, compiled at first use
      with (jax.profiler.StepTraceAnnotation("train", step_num=step),
            console.announced_if_slow(f"Compiling the train step{_kind(kind)}")
            if kind not in compiled else contextlib.nullcontext()):
        state, metrics = run.train_step(state, next(batches), run.rng, sam_step=kind)
      compiled.add(kind)
      pending.append(metrics)
      profiler.after_step(step, state)
      progress.update(step)
      log_due = step % policy.log_every_steps == 0 or step == run.total_steps
      eval_due = step == run.total_steps or run.evaluation.due(step)
      stop = stop_at(step)
      save_due = (
          stop or step in policy.keep_steps or step == run.total_steps
          or (log_due and
              (processes.agree(time.monotonic() - last_save >= policy.save_progress_seconds))))
      if log_due or eval_due or save_due:  # nothing non-finite is evaluated or saved
        checkpoints.check_saved(manager)  # a failed save stops the run here
        check_finite(policy.skip_nonfinite, pending, step, run.total_steps, manager)
      if log_due:
        scalars = train_scalars(step, pending, param_norm(state.params), run.schedule(step - 1))
        if rate := progress.report(step, scalars):
          scalars["steps_per_sec"] = rate
        writer.write_scalars(step, scalars)
        pending = []
      if eval_due:
        with (console.announced_if_slow("Compiling the evaluation step")
              if "eval" not in compiled else contextlib.nullcontext()):
          results = evaluation.evaluate_all(run.evaluation, state, step, writer,
                                            last=step == run.total_steps)
        compiled.add("eval")
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
    results = evaluation.evaluate_all(run.evaluation, state, int(state.step), writer, last=True)
  writer.flush()
  results = {**results, "steps": int(state.step), "epochs": int(state.step) / run.steps_per_epoch}
  if run.data.realised_noise is not None:
    results["realised_label_noise"] = run.data.realised_noise
  return results


def _kind(second_pass: bool | None) -> str:
  return "" if second_pass is None else (
      " with its second pass" if second_pass else " without its second pass")


def check_finite(skip_nonfinite: bool, pending: list[dict[str, jax.Array]], step: int,
                 total_steps: int, manager: ocp.CheckpointManager) -> None:
  """Stops the run at the first step of `pending` (the steps up to `step`) whose loss or
  gradient was NaN/Inf, unless the run skips such updates.

  Raises:
    UsageError: naming that step and the last good checkpoint.
  """
  if skip_nonfinite:
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
