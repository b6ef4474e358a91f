"""What a training workdir holds, read without JAX: the config its checkpoints were trained
with (config.json), the changes made on resuming (config_changes.json), results.json, the
latest checkpoint's step, and who owns it (`own`: one run at a time).

config.json is written when a run starts from scratch and kept when it resumes, so that
the analyses label a run by what it trained. The training binary refuses to resume with
a config that computes something else (`check_resume`) unless `--allow_config_changes`;
allowed changes are appended to config_changes.json with the step they start at.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import ml_collections

from sam_jax.errors import UsageError

CONFIG, CHANGES, RESULTS = "config.json", "config_changes.json", "results.json"
OWNER = "owner.json"  # who runs in the workdir, locked while the run lives
# Fields that change what is logged, saved or evaluated, or how a fault is met, but not
# the weights a run trains: a resumed run may change them freely.
BOOKKEEPING = frozenset({
    "data_dir", "log_every_steps", "profile_steps", "evaluate_every", "eval_every_steps",
    "also_eval_on_training_set", "compute_top_5_error_rate", "save_progress_seconds",
    "keep_checkpoints", "additional_checkpoints_at_epochs", "nonfinite", "init_from",
    "init_from_ema", "replica_mapping"
})  # the same replicas, another schedule of work
# ...and of those, the ones a finished run's results do not depend on.
NOT_IN_RESULTS = BOOKKEEPING - {
    "evaluate_every", "eval_every_steps", "also_eval_on_training_set", "compute_top_5_error_rate"
}


def latest_checkpoint_step(workdir: str) -> int | None:
  """The step of the newest finished checkpoint in `workdir/checkpoints`, or None."""
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(name) for name in os.listdir(folder) if name.isdigit()
          ] if os.path.isdir(folder) else []
  return max(steps, default=None)


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"sam.rho": 0.05, ...} of a nested dict."""
  out = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      out.update(flat(value, f"{prefix}{name}."))
    else:
      out[f"{prefix}{name}"] = value
  return out


def as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config's fields as config.json holds them (tuples as lists)."""
  return flat(json.loads(config.to_json_best_effort()))


def read_json(workdir: str, name: str) -> Any:
  path = os.path.join(workdir, name)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def run_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config the run was last continued with: config.json with its recorded changes
  applied (what the loop resumes, and what the analyses and scripts read), or None."""
  saved = read_json(workdir, CONFIG)
  if saved is None:
    return None
  config = ml_collections.ConfigDict(saved)
  for record in read_json(workdir, CHANGES) or []:
    for field, (_, new) in record["changes"].items():
      *parents, name = field.split(".")
      node = config
      for parent in parents:
        node = node[parent]
      node[name] = new
  return config


def trained_config(workdir: str) -> dict[str, Any] | None:
  """The fields of `run_config`, flat ({"sam.rho": ...})."""
  config = run_config(workdir)
  return None if config is None else flat(config.to_dict())


def changes(config: ml_collections.ConfigDict, workdir: str) -> dict[str, tuple[Any, Any]]:
  """{field: (value the run was last continued with, value now)} for every field that
  differs."""
  saved = trained_config(workdir)
  if saved is None:
    return {}
  now = as_json(config)
  return {
      field: (saved.get(field), now.get(field))
      for field in sorted(saved.keys() | now.keys())
      if saved.get(field) != now.get(field)
  }


def describe(changed: dict[str, tuple[Any, Any]]) -> str:
  return ", ".join(f"{field} {old!r} -> {new!r}" for field, (old, new) in changed.items())


def check_resume(config: ml_collections.ConfigDict, workdir: str,
                 allow_changes: bool) -> dict[str, tuple[Any, Any]]:
  """The changes from the config `workdir`'s checkpoints were trained with (none for a
  run that has no checkpoint yet: it starts afresh).

  Raises:
    UsageError: for changes to what the run computes, unless `allow_changes`.
  """
  if latest_checkpoint_step(workdir) is None:
    return {}
  changed = changes(config, workdir)
  computed = {field: values for field, values in changed.items() if field not in BOOKKEEPING}
  if computed and not allow_changes:
    raise UsageError(
        f"{workdir} was trained with another config ({describe(computed)}): give another "
        "--workdir for a new run, or --allow_config_changes to continue this one with them "
        f"(recorded in {CHANGES}).")
  return changed


def finished_results(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """results.json of a run that finished with this config (up to bookkeeping), else None."""
  results = read_json(workdir, RESULTS)
  if not results or results.get("steps") != latest_checkpoint_step(workdir):
    return None
  if any(field not in NOT_IN_RESULTS for field in changes(config, workdir)):
    return None
  return results


def write_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` whole or not at all: into a file beside it, flushed to disk,
  then renamed over it. A crash (or an error) midway leaves the old file as it was."""
  partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.partial")
  try:
    with open(partial, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def write_json(workdir: str, name: str, value: Any) -> None:
  """`value` as JSON in `workdir/name`, atomically (`write_atomically`)."""
  write_atomically(os.path.join(workdir, name), json.dumps(value, indent=2, allow_nan=False))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """config.json of a run starting from scratch (any earlier attempt's changes go)."""
  write_atomically(os.path.join(workdir, CONFIG), config.to_json_best_effort(indent=2))
  if os.path.exists(os.path.join(workdir, CHANGES)):
    os.remove(os.path.join(workdir, CHANGES))


def record_changes(workdir: str, step: int, changed: dict[str, tuple[Any, Any]]) -> None:
  """Appends {"step": step, "changes": {field: [old, new]}} to config_changes.json."""
  history = read_json(workdir, CHANGES) or []
  history.append({"step": step, "changes": {k: list(v) for k, v in changed.items()}})
  write_json(workdir, CHANGES, history)


@contextlib.contextmanager
def own(workdir: str) -> Iterator[None]:
  """Holds `workdir` for one run: an exclusive lock on WORKDIR/owner.json, which says
  who holds it (host, pid, since when).

  The kernel releases the lock when the process ends, however it ends (kill -9 or a lost
  node included), so the next run takes over a dead owner's workdir with no clean-up. The
  file is never removed (removing it would let two runs lock two different files); it
  keeps the last owner's line. On a file system without locks (some FUSE mounts) the
  lock always succeeds and the file only informs.

  Raises:
    UsageError: at once, naming the owner, while another run holds the workdir.
  """
  fd = os.open(os.path.join(workdir, OWNER), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{}"
      owner = json.loads(holder) if holder.startswith("{") else {}
      raise UsageError(
          f"{workdir} is in use by another run (pid {owner.get('pid', '?')} on "
          f"{owner.get('host', '?')}, since {owner.get('since', '?')}): wait for it to end or "
          "stop it, or give another --workdir.") from e
    line = json.dumps({
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.datetime.now().isoformat(timespec="seconds")
    })
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{line}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock
