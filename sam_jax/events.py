"""A run's TensorBoard event files: the scalars its metric writer wrote, read back, and
those a resumed run computes again, dropped (`drop_points`).

The training loop writes its metrics with clu's `metric_writers` (sam_jax/loop.py), that is
with `tf.summary.scalar`: each scalar is an `Event` proto whose summary value holds a rank-0
tensor (`value.tensor`); TF1-style writers put it in `value.simple_value`, read as well.
An event file is a stream of TFRecords, read here with TensorBoard's own record loader, which
stops quietly at a record that a crash left half-written. A workdir gets a new file each
time a run starts (or resumes); file names begin with the creation time, so name order is
the order they were written in.
"""

import glob
import os
from collections.abc import Callable, Iterator

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from sam_jax.data import tf_cpu  # noqa: F401  (TensorBoard's loader imports TF: CPU only)


def event_files(workdir: str) -> list[str]:
  """The `events.out.tfevents*` files directly in `workdir`, in name (creation) order."""
  pattern = os.path.join(glob.escape(os.fspath(workdir)), "events.out.tfevents*")
  return sorted(glob.glob(pattern))


def records(path: str) -> Iterator[bytes]:
  """The serialized `Event` records of one event file, in the order they were written."""
  yield from event_file_loader.RawEventFileLoader(path).Load()


def _scalar(value) -> float | None:
  """The number a summary value holds, or None for anything but a numeric scalar."""
  kind = value.WhichOneof("value")
  if kind == "simple_value":
    return float(value.simple_value)
  if kind == "tensor":
    array = tensor_util.make_ndarray(value.tensor)
    if array.shape == () and array.dtype.kind in "biuf":
      return float(array)
  return None


def read_scalars(workdir: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of every scalar in the event files directly in `workdir`.

  Files are read in name order, so for a (tag, step) written twice (a run resumed from an
  earlier checkpoint) the later file's value wins.
  """
  found = {}
  for path in event_files(workdir):
    for record in records(path):
      # event_pb2 is protobuf-generated without type stubs: pyright cannot see its Event.
      event = event_pb2.Event.FromString(record)  # pyright: ignore[reportAttributeAccessIssue]
      for value in event.summary.value:
        number = _scalar(value)
        if number is not None:
          found.setdefault(value.tag, {})[event.step] = number
  return found


def drop_points(workdir: str, drop: Callable[[str, int], bool]) -> int:
  """Rewrites the event files without the scalars for which `drop(tag, step)` holds; returns
  how many were dropped. A resumed run drops the points after its checkpoint's step (it
  writes them again), so that its curves show each step once. Each file is replaced whole
  (written beside it, then renamed), and only if it changes; a TensorBoard that is watching
  the workdir shows the change once reloaded.
  """
  dropped = 0
  for path in event_files(workdir):
    kept, dropped_here = [], 0
    for record in records(path):
      # event_pb2 is protobuf-generated without type stubs: pyright cannot see its Event.
      event = event_pb2.Event.FromString(record)  # pyright: ignore[reportAttributeAccessIssue]
      values = [v for v in event.summary.value if _scalar(v) is None or not drop(v.tag, event.step)]
      if len(values) == len(event.summary.value):
        kept.append(record)
        continue
      dropped_here += len(event.summary.value) - len(values)
      if values:
        del event.summary.value[:]
        event.summary.value.extend(values)
        kept.append(event.SerializeToString())
    if dropped_here:
      rewritten = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.rewritten")
      with open(rewritten, "wb") as f:
        writer = record_writer.RecordWriter(f)
        for record in kept:
          writer.write(record)
      os.replace(rewritten, path)
      dropped += dropped_here
  return dropped
