"""Orbax checkpoints of the training state in `workdir/checkpoints`, and resuming from them.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so
a run killed mid-save keeps every earlier checkpoint intact.
"""

import os
from collections.abc import Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from sam_jax.errors import UsageError


def make_manager(workdir: str, keep: int = 2,
                 keep_forever_steps: Sequence[int] = ()) -> ocp.CheckpointManager:
  """A manager keeping the `keep` latest checkpoints plus those at `keep_forever_steps`."""
  preserve = [policies.LatestN(keep)]
  if keep_forever_steps:
    preserve.append(policies.CustomSteps(list(keep_forever_steps)))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(preserve), create=True)
  return ocp.CheckpointManager(f"{workdir}/checkpoints", options=options)


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir/checkpoints` holds a finished checkpoint (looks, creates nothing)."""
  folder = os.path.join(workdir, "checkpoints")
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def save(manager: ocp.CheckpointManager, state: Any) -> None:
  """Starts saving `state` at its step (asynchronously; `manager.wait_until_finished()`)."""
  manager.save(int(state.step), args=ocp.args.StandardSave(state), force=True)


def shape_mismatches(saved: Any, wanted: Any) -> list[str]:
  """Names (and shapes) of arrays that are missing, unexpected or of another shape."""
  def shapes(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                     for k in path): tuple(leaf.shape) for path, leaf in leaves}
  saved, wanted = shapes(saved), shapes(wanted)
  problems = [f"{name} missing" for name in wanted.keys() - saved.keys()]
  problems += [f"{name} unexpected" for name in saved.keys() - wanted.keys()]
  problems += [f"{name} saved {saved[name]} vs model {wanted[name]}"
               for name in wanted.keys() & saved.keys() if saved[name] != wanted[name]]
  return sorted(problems)


def restore_latest(manager: ocp.CheckpointManager, state: Any) -> Any:
  """The latest checkpoint laid out like `state` (same shardings), or `state` if none.

  Raises:
    UsageError: one line naming the checkpoint and the arrays that do not fit, when
      the saved tree does not match `state` (another model, dataset or optimizer).
      It is checked from the checkpoint's metadata, before anything is read; the
      checkpoint is left untouched.
  """
  step = manager.latest_step()
  if step is None:
    return state
  path = manager.directory / str(step) / "default"
  problems = shape_mismatches(ocp.StandardCheckpointer().metadata(path).item_metadata, state)
  if problems:
    shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
    raise UsageError(
        f"The checkpoint at step {step} in {manager.directory} does not fit this model and "
        f"optimizer ({len(problems)} arrays: {shown}); use another --workdir or the config "
        "it was trained with.")
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  logging.info("Resumed from the checkpoint at step %d in %s.", step, manager.directory)
  return restored


def read(workdir: str, step: int | None = None) -> tuple[int, dict[str, Any]]:
  """The saved state at `step` (default: the latest) of a workdir, as a dict of arrays.

  Raises:
    UsageError: one line, when the workdir holds no such checkpoint.
  """
  folder = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = sorted(int(name) for name in os.listdir(folder) if name.isdigit()) \
      if os.path.isdir(folder) else []
  if not steps or (step is not None and step not in steps):
    found = f"its steps are {steps}" if steps else "it has none"
    raise UsageError(f"No checkpoint{'' if step is None else f' at step {step}'} in {folder} "
                     f"({found}): train into this workdir first (python -m sam_jax.train "
                     f"--workdir={workdir} ...).")
  step = steps[-1] if step is None else step
  path = os.path.join(folder, str(step), "default")
  checkpointer = ocp.StandardCheckpointer()
  # On one device, whatever devices and processes wrote it.
  on_one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_one_device),
                        checkpointer.metadata(path).item_metadata)
  return step, checkpointer.restore(path, target)
