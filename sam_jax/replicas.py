# pyright: strict, reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false, reportUnknownLambdaType=false
# pyright: reportMissingTypeStubs=false
"""How one per-replica step becomes one program over devices and virtual replicas.

A *replica* owns one SAM perturbation and sees m examples (the m of m-sharpness).
The global batch is split over D devices (a 1-D mesh, axis `DEVICE_AXIS`, mapped
with `jax.shard_map`) and, inside each device, over V virtual replicas (mapped with
`jax.vmap`, axis `VIRTUAL_AXIS`), so global batch = D * V * m. A step is written once
for one replica, with collectives over `REPLICA_AXES`, and means the same thing for
every layout: replica r always gets examples [r*m, (r+1)*m) of the global batch.
"""

import collections
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sam_jax.errors import UsageError
from sam_jax.convolution import in_loop_body

DEVICE_AXIS = "devices"
VIRTUAL_AXIS = "virtual"
REPLICA_AXES = (DEVICE_AXIS, VIRTUAL_AXIS)


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a global batch is laid out as devices x virtual replicas x m examples."""
  num_devices: int
  virtual_replicas: int  # per device
  examples_per_replica: int  # m

  @property
  def num_replicas(self) -> int:
    return self.num_devices * self.virtual_replicas

  @property
  def per_device_batch(self) -> int:
    return self.virtual_replicas * self.examples_per_replica

  @property
  def global_batch(self) -> int:
    return self.num_devices * self.per_device_batch


def make_layout(global_batch: int, m: int | None = None, num_devices: int | None = None,
                paired: bool = False) -> Layout:
  """Splits `global_batch` over `num_devices` (default: all) and replicas of m examples.

  m defaults to the per-device batch (one replica per device: the original code).
  `paired`: the step sees each process's batch with the one before it (`paired_batches`),
  twice the examples, in replicas of m that divides the process's batch (by default
  the per-device share of both, or the whole batch on one device: two replicas).

  Raises:
    UsageError: naming the numbers, when the batch does not split into whole replicas.
  """
  num_devices = num_devices or jax.device_count()
  if paired:
    process_batch = global_batch // jax.process_count()
    global_batch *= 2
    m = m or min(process_batch, global_batch // num_devices) or None
    if m is not None and process_batch % m:
      raise UsageError(f"m={m} examples per replica does not divide the batch of "
                       f"{process_batch} that a process pairs with the one before it: choose m "
                       f"among the divisors of {process_batch}.")
  if global_batch <= 0 or global_batch % num_devices:
    raise UsageError(
        f"The global batch of {global_batch} does not split over {num_devices} devices: "
        f"use a batch size that is a multiple of {num_devices}.")
  per_device = global_batch // num_devices
  m = per_device if m is None else m
  if m <= 0 or per_device % m:
    raise UsageError(
        f"m={m} examples per replica does not divide the per-device batch of {per_device} "
        f"(global batch {global_batch} over {num_devices} devices): choose m among the "
        f"divisors of {per_device}.")
  return Layout(num_devices, per_device // m, m)


def check_group_size(layout: Layout, group_size: int | None) -> None:
  """A perturbation group (`sam.sync_group_size`) must divide the replicas."""
  if group_size is not None and (group_size < 1 or layout.num_replicas % group_size):
    raise UsageError(
        f"sam.sync_group_size={group_size} does not divide the {layout.num_replicas} "
        f"replicas ({layout.num_devices} devices x {layout.virtual_replicas} virtual): "
        f"choose a divisor of {layout.num_replicas}.")


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (default: all), axis `DEVICE_AXIS`."""
  devices = jax.devices()
  num_devices = num_devices or len(devices)
  if num_devices > len(devices):
    raise UsageError(f"Asked for {num_devices} devices but only {len(devices)} are visible: "
                     f"use at most {len(devices)}.")
  return jax.make_mesh((num_devices,), (DEVICE_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:num_devices])


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of what every device holds whole (the state)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The sharding of a global batch: examples split over `DEVICE_AXIS`."""
  return NamedSharding(mesh, P(DEVICE_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree on every device of the mesh (fully replicated)."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Turns this process's slice of the global batch (numpy) into global arrays.

  Leaves are split on their leading (example) axis over `DEVICE_AXIS`; with several
  processes each passes its own consecutive slice, in process order.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


def prefetch_to_devices(batches: Iterable[Any], mesh: Mesh, size: int = 2) -> Iterator[Any]:
  """`shard_batch` of each batch, with `size` batches on the devices (2: double-buffered).

  When the loop takes batch t, batch t + 1 is already placed: with the step dispatched
  asynchronously, the host reads, augments and copies it while the devices run step t.
  """
  batches, ahead = iter(batches), collections.deque()

  def place(count: int) -> None:
    ahead.extend(shard_batch(batch, mesh) for batch in itertools.islice(batches, count))

  place(size)
  while ahead:
    yield ahead.popleft()
    place(1)


def paired_batches(batches: Iterable[Any], m: int, first_is_new: bool = True) -> Iterator[Any]:
  """Each batch with the one before it, for a step whose even replicas see the previous batch
  and the odd ones the current one (SAMPa, `family.parallel`): blocks of m examples taken
  in turn from the previous and the current batch, twice the examples.

  The first batch is paired with itself when `first_is_new` (a run's first step), else it
  only serves as the previous batch (a resumed run, its batches from the step before).
  """
  def interleave(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    blocks = np.stack(
        [previous.reshape(-1, m, *previous.shape[1:]),
         current.reshape(-1, m, *current.shape[1:])], axis=1)
    return blocks.reshape(-1, *previous.shape[1:])

  batches = iter(batches)
  previous = next(batches, None)
  if previous is not None and first_is_new:
    yield jax.tree.map(interleave, previous, previous)
  for current in batches:
    yield jax.tree.map(interleave, previous, current)
    previous = current


def replica_index() -> jax.Array:
  """Index of this replica in [0, num_replicas), the same in every layout."""
  return jax.lax.axis_index(REPLICA_AXES)


MAPPINGS = ("loop", "scan", "vmap")


def resolve_mapping(mapping: str, sync_batch_norm: bool = False) -> str:
  """The mapping a run uses (`one_replica_at_a_time`) for a requested one: "auto" is the
  unrolled loop on CPU, where grouped convolutions are slow, and vmap on GPU and TPU,
  where they are native; BatchNorm synchronised across replicas needs them all at once:
  vmap."""
  if sync_batch_norm:
    return "vmap"
  if mapping == "auto":
    return "loop" if jax.default_backend() == "cpu" else "vmap"
  return mapping


def one_replica_at_a_time(fn: Callable[..., Any], mapping: str = "loop") -> Callable[..., Any]:
  """`fn`, but evaluated replica by replica when vmapped: an unrolled loop or a scan.

  Under vmap, per-replica convolution kernels (w + eps_r in the SAM pass) and
  per-replica kernel gradients become grouped convolutions, which XLA:CPU runs 3-4x
  slower than V ordinary convolutions over m examples each. Wrapping the gradient
  passes of the step in this keeps the step vmapped (and its collectives named) while
  the convolutions stay ordinary. `fn` itself must not use collectives over
  `VIRTUAL_AXIS` (e.g. BatchNorm synchronised across replicas): map those with plain
  vmap (`mapping="vmap"` returns `fn` unchanged).

  mapping="loop" unrolls the V replicas (compile time grows with V; XLA may keep all
  their activations alive at once: XLA:CPU drops `lax.optimization_barrier`, so they
  cannot be chained); "scan" runs them one after another in a `lax.map`, compiled once
  whatever V, with one replica's activations alive at a time: gradient accumulation
  over V micro-batches of m examples, each micro-batch its own SAM perturbation.
  XLA:CPU runs convolution gradients slower in a loop body, less so with
  `convolution.py`'s kernel gradient, used there.
  """
  if mapping not in MAPPINGS:
    raise ValueError(f"Unknown replica mapping {mapping!r}: use one of {MAPPINGS}.")
  if mapping == "vmap":
    return fn

  @jax.custom_batching.custom_vmap
  def one_by_one(*args: Any) -> Any:
    return fn(*args)

  def replica(i: int | jax.Array, args: tuple[Any, ...], in_batched: Sequence[Any]) -> Any:
    return one_by_one(
        *jax.tree.map(lambda x, batched: x[i] if batched else x, args, tuple(in_batched)))

  @one_by_one.def_vmap
  def rule(axis_size: int, in_batched: Sequence[Any], *args: Any) -> tuple[Any, Any]:
    if mapping == "scan":

      def body(i: jax.Array) -> Any:
        with in_loop_body():
          return replica(i, args, in_batched)

      out = jax.lax.map(body, jax.numpy.arange(axis_size))
    else:
      outs = [replica(i, args, in_batched) for i in range(axis_size)]
      out = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *outs)
    return out, jax.tree.map(lambda _: True, out)

  return one_by_one


def map_replicas(step: Callable[..., Any], mesh: Mesh, virtual_replicas: int = 1,
                 donate_state: bool = False) -> Callable[..., Any]:
  """Maps a per-replica `step(state, batch, *args)` over devices and virtual replicas.

  `state` and `*args` are the same on every replica; every leaf of `batch` is split on
  its leading axis, each replica getting a consecutive block. Every output must be
  the same on all replicas, i.e. reduced with collectives over `REPLICA_AXES` (vmap
  raises "mapped output but out_axes is None" otherwise).

  `check_vma=False`: JAX's varying-axes checker does not yet handle collectives over a
  vmap axis nested inside shard_map; replica-invariance is instead guaranteed by the
  vmap `out_axes=None` check above.

  Returns:
    A jitted function of (state, global_batch, *args) on arrays placed on `mesh`.
  """
  def per_device(state: Any, batch: Any, *args: Any) -> Any:
    batch = jax.tree.map(lambda x: x.reshape((virtual_replicas, -1) + x.shape[1:]), batch)
    in_axes = (None, 0) + (None,) * len(args)
    return jax.vmap(step, in_axes=in_axes, out_axes=None, axis_name=VIRTUAL_AXIS)(state, batch,
                                                                                  *args)

  def over_mesh(state: Any, batch: Any, *args: Any) -> Any:
    in_specs = (P(), P(DEVICE_AXIS)) + (P(),) * len(args)
    return jax.shard_map(per_device, mesh=mesh, in_specs=in_specs, out_specs=P(),
                         check_vma=False)(state, batch, *args)

  return jax.jit(over_mesh, donate_argnums=(0,) if donate_state else ())
