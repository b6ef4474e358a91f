"""Orbax checkpoints of the training state in `workdir/checkpoints`, and resuming from them.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so
a run killed mid-save keeps every earlier checkpoint intact; one damaged afterwards is
moved aside on resume and the one before it is used.
"""

import contextlib
import functools
import os
import re
import weakref
from collections.abc import Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from sam_jax import processes, storage
from sam_jax.errors import UsageError


def make_manager(workdir: str, keep: int = 2,
                 keep_forever_steps: Sequence[int] = ()) -> ocp.CheckpointManager:
  """A manager keeping the `keep` latest checkpoints plus those at `keep_forever_steps`."""
  preserve: list[policies.PreservationPolicy] = [policies.LatestN(keep)]
  if keep_forever_steps:
    preserve.append(policies.CustomSteps(list(keep_forever_steps)))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(preserve), create=True)
  return ocp.CheckpointManager(f"{workdir}/checkpoints", options=options)


@functools.cache
def save_whole_replicas() -> None:
  """In a single process, makes Orbax save each jax.Array from one replica's shards.

  Orbax's default on the CPU and TPUs splits a replicated array between its replicas,
  each copying a slice to the host: one small program compiled per array shape and
  slice, about 2 s at a run's first save (66 arrays, 8 CPU devices), for nothing in one
  process. With several processes the split spreads the writing over the hosts, and the
  default stays. Orbax keeps type handlers per process: the training loop calls this
  (once per process).
  """
  if jax.process_count() > 1:
    return
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # Orbax warns that it replaces its own handler
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  finally:
    logging.set_verbosity(verbosity)


def check_writable(workdir: str) -> None:
  """Creates `workdir` and writes (then removes) a small file there.

  Raises:
    UsageError: one line, for a read-only, full or forbidden workdir.
  """
  probe = os.path.join(workdir, f".writable.{jax.process_index()}")
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, "wb") as f:
      f.write(b"\0" * 4096)
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as e:
    raise UsageError(f"Cannot write in {workdir} ({e.strerror}): choose another --workdir or "
                     "make room there.") from e


_SAVING: "weakref.WeakKeyDictionary[ocp.CheckpointManager, int]" = weakref.WeakKeyDictionary()


def save(manager: ocp.CheckpointManager, state: Any) -> None:
  """Starts saving `state` at its step, in the background (`check_saved` and `close` report
  how it ends), once the previous save has ended well (Orbax waits for it anyway).

  Raises:
    UsageError: when the storage refused the previous save or refuses this one (full,
      read-only...), naming its step; the checkpoints completed before are intact.
  """
  with _storage_faults(manager, _SAVING.get(manager)):
    manager.wait_until_finished()
    manager.check_for_errors()
  step = _SAVING[manager] = int(state.step)
  with _storage_faults(manager, step):
    manager.save(step, args=ocp.args.StandardSave(state), force=True)


def check_saved(manager: ocp.CheckpointManager) -> None:
  """Raises what the last save met, once it has ended; returns at once while it runs.

  Raises:
    UsageError: one line naming its step and the last complete checkpoint, for a storage
      fault; any other failure keeps its own exception.
  """
  if manager.is_saving_in_progress():
    return
  with _storage_faults(manager, _SAVING.get(manager)):
    manager.wait_until_finished()  # ended: raises what the save met, if anything
    manager.check_for_errors()


def close(manager: ocp.CheckpointManager) -> None:
  """Waits for the last save to end, then closes the manager (see `check_saved`)."""
  with _storage_faults(manager, _SAVING.get(manager)):
    manager.close()


@contextlib.contextmanager
def _storage_faults(manager: ocp.CheckpointManager, step: int | None):
  try:
    yield
  except Exception as e:  # Orbax reports a failed write as ValueError, OSError, ...
    fault = storage.fault(e)
    if fault is None:
      raise
    last = [s for s in manager.all_steps() if step is None or s < step]
    kept = (f"the last complete one, step {max(last)}, is intact"
            if last else "none was complete before")
    which = "a checkpoint" if step is None else f"the checkpoint of step {step}"
    raise UsageError(f"Could not write {which} in {manager.directory} ({fault}); {kept}: make "
                     "room there and run the same command to resume.") from e


def shape_mismatches(saved: Any, wanted: Any) -> list[str]:
  """Names (and shapes) of arrays that are missing, unexpected or of another shape."""
  def shapes(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                 for k in path): tuple(leaf.shape)
        for path, leaf in leaves
    }

  saved, wanted = shapes(saved), shapes(wanted)
  problems = [f"{name} missing" for name in wanted.keys() - saved.keys()]
  problems += [f"{name} unexpected" for name in saved.keys() - wanted.keys()]
  problems += [
      f"{name} saved {saved[name]} vs model {wanted[name]}" for name in wanted.keys()
      & saved.keys() if saved[name] != wanted[name]
  ]
  return sorted(problems)


_READ, _DAMAGED, _FAILED = 0, 1, 2  # what one process found of a checkpoint


def restore_latest(manager: ocp.CheckpointManager, state: Any) -> Any:
  """The latest readable checkpoint laid out like `state` (same shardings), or `state`
  if there is none.

  A checkpoint whose files are shown damaged (`damaged`: unreadable metadata, truncated
  or missing data) is moved aside to `WORKDIR/unreadable_checkpoints/STEP`, with one
  warning line, and the next older one is tried. Any other failure (out of memory, a
  storage or network fault) leaves it in place. Every process restores the same step:
  they agree on what each attempt found before going on.

  Raises:
    UsageError: one line naming the checkpoint and the arrays that do not fit, when
      the saved tree does not match `state` (another model, dataset or optimizer), checked
      from the metadata before anything is read; or naming a checkpoint that could not
      be read without being damaged (left in place); or when every checkpoint was damaged.
  """
  set_aside = []
  for step in sorted(manager.all_steps(), reverse=True):
    found, error, restored = _read(manager, step, state)
    found_everywhere = processes.gather(found)
    if (found_everywhere == _READ).all():
      logging.info("Resumed from the checkpoint at step %d in %s.", step, manager.directory)
      return restored
    if (found_everywhere == _FAILED).any():
      reason = _first_line(error) if found == _FAILED else "another process could not read it"
      raise UsageError(
          f"The checkpoint at step {step} in {manager.directory} could not be read ({reason}); "
          "nothing shows it damaged, so it is left in place: run the same command again (with "
          "more memory, if that ran out).") from error
    set_aside.append(_set_aside(manager, step, error))
  if set_aside:
    raise UsageError(f"No checkpoint in {manager.directory} could be read (moved aside: "
                     f"{', '.join(set_aside)}): look at them, or start again with the same "
                     "command.")
  return state


def _read(manager: ocp.CheckpointManager, step: int,
          state: Any) -> tuple[int, BaseException | None, Any]:
  """(what this process found, the error, the restored state) of the checkpoint at `step`.

  Raises:
    UsageError: when its tree does not fit `state` (the same on every process).
  """
  path = manager.directory / str(step) / "default"
  try:
    metadata = ocp.StandardCheckpointer().metadata(path).item_metadata
  except Exception as e:  # noqa: BLE001  (Orbax and TensorStore raise many kinds)
    return (_DAMAGED if storage.damaged(e) else _FAILED), e, None
  if metadata is None:  # Orbax's answer to an unreadable _METADATA or OCDBT manifest
    return _DAMAGED, ValueError("its metadata (_METADATA, or the OCDBT manifest) cannot be "
                                "read"), None
  problems = shape_mismatches(metadata, state)
  if problems:
    more = f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
    shown = "; ".join(problems[:4]) + more
    raise UsageError(
        f"The checkpoint at step {step} in {manager.directory} does not fit this model and "
        f"optimizer ({len(problems)} arrays: {shown}); use another --workdir or the config "
        "it was trained with.")
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  try:
    return _READ, None, manager.restore(step, args=ocp.args.StandardRestore(target))
  except Exception as e:  # noqa: BLE001
    return (_DAMAGED if storage.damaged(e) else _FAILED), e, None


def _first_line(error: BaseException | None) -> str:
  """What went wrong, in a line: TensorStore's status line where there is one."""
  if error is None:
    return "damaged on another process"
  statuses = [c for c in storage.causes(error) if re.match(r"[A-Z_]{5,}: ", str(c))]
  message = str((statuses or [error])[-1]).strip()
  return (message.splitlines() or [type(error).__name__])[0][:200]


def _set_aside(manager: ocp.CheckpointManager, step: int, error: BaseException | None) -> str:
  """Moves an unreadable checkpoint out of the manager's sight (never deletes it)."""
  aside = manager.directory.parent / "unreadable_checkpoints" / str(step)
  if jax.process_index() == 0:
    aside.parent.mkdir(exist_ok=True)
    os.rename(manager.directory / str(step), aside)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
  manager.reload()
  logging.warning(
      "The checkpoint at step %d in %s cannot be read (%s): moved to %s; trying "
      "the one before.", step, manager.directory, _first_line(error), aside)
  return str(aside)


def saved_step(workdir: str, step: int | None = None) -> int:
  """`step` (default: the latest) if the workdir holds a checkpoint of it.

  Raises:
    UsageError: one line, when it does not.
  """
  folder = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = sorted(int(name) for name in os.listdir(folder) if name.isdigit()) \
      if os.path.isdir(folder) else []
  if not steps or (step is not None and step not in steps):
    found = f"its steps are {steps}" if steps else "it has none"
    raise UsageError(f"No checkpoint{'' if step is None else f' at step {step}'} in {folder} "
                     f"({found}): train into this workdir first (python -m sam_jax.train "
                     f"--workdir={workdir} ...).")
  return steps[-1] if step is None else step


def read(workdir: str, step: int | None = None, like: Any = None) -> tuple[int, Any]:
  """The saved state at `step` (default: the latest) of a workdir, on one device: laid out
  as `like` (a state or its `jax.eval_shape`: the optimizer's typed states), or as a dict
  of arrays.

  Raises:
    UsageError: one line, when the workdir holds no such checkpoint, or one that does not
      fit `like` (naming the arrays).
  """
  step = saved_step(workdir, step)
  folder = os.path.join(os.path.abspath(workdir), "checkpoints")
  path = os.path.join(folder, str(step), "default")
  checkpointer = ocp.StandardCheckpointer()
  # On one device, whatever devices and processes wrote it.
  on_one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  metadata = checkpointer.metadata(path).item_metadata
  if like is not None and (problems := shape_mismatches(metadata, like)):
    raise UsageError(f"The checkpoint at step {step} in {folder} does not fit the model and "
                     f"optimizer of its config.json ({'; '.join(problems[:4])}): was it written "
                     "by another version of sam-jax, or is config.json another run's?")
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_one_device),
                        metadata if like is None else like)
  return step, checkpointer.restore(path, target)
