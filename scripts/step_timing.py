"""Compiles and times the real train step on synthetic data: the part that
`benchmark_step.py` and `accelerator_check.py` share.

A setting is a model, a global batch laid out in replicas of m examples, a replica mapping,
a dtype and the SAM fields of the config. `prepare` builds it as the training binary does
(the config schema of `configs/default.py`, `optim.create_optimizer`,
`steps.make_train_step`) on random on-device batches, so no TensorFlow is needed, and
returns XLA's figures for the compiled step with a function that times a block of steps.
"""

import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402  (the checkout's configs/, by path)
from sam_jax import optim, replicas, steps  # noqa: E402
from sam_jax.family import registry  # noqa: E402
from sam_jax.models import get_model  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Setting:
  model: str
  batch_size: int  # global
  image_size: int
  num_classes: int
  dtype: str = "float32"
  sam: tuple[tuple[str, Any], ...] = ()  # config.sam fields; rho=0.0 is SGD
  m: int | None = None  # examples per replica; None: one replica per device
  mapping: str = "loop"  # how virtual replicas run (replicas.one_replica_at_a_time)
  devices: int | None = None  # None: all


@dataclasses.dataclass(frozen=True)
class Figures:
  """XLA's figures for a compiled step (FLOPs per device, nan for a scan, whose body XLA's
  cost analysis counts once) and how it is laid out."""
  layout: replicas.Layout
  compile_s: float
  flops: float
  temp_mb: float  # working memory: temporaries
  peak_mb: float  # arguments + outputs + temporaries - donated buffers


def compiled_flops(compiled: Any) -> float:
  """FLOPs of one run of a compiled program on one device, from XLA's cost analysis (a
  sharded program's per-device part; nan if it has none)."""
  costs = compiled.cost_analysis()
  if isinstance(costs, (list, tuple)):  # one dict per program in older JAX
    costs = costs[0] if costs else None
  return float(costs.get("flops", float("nan"))) if costs else float("nan")


def matmul_peak(dtype: str, n: int = 2048, repeats: int = 5, device: Any = None) -> float:
  """FLOP/s of an n x n matmul in `dtype` at JAX's default precision on `device` (default:
  the first): the reference of `fraction of peak`."""
  a = jax.device_put(jnp.ones((n, n), jnp.dtype(dtype)), device or jax.devices()[0])
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a))
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / statistics.median(times)


def memory_mb(compiled: Any) -> tuple[float, float]:
  """(working, peak) MiB of a compiled program from XLA's memory analysis (nan if none)."""
  m = compiled.memory_analysis()
  if not m:
    return float("nan"), float("nan")
  peak = (
      m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
      m.alias_size_in_bytes)
  return m.temp_size_in_bytes / 2 ** 20, peak / 2 ** 20


def prepare(setting: Setting, rho: float = 0.05, block: int = 5,
            warmup: int = 2) -> tuple[Figures, Callable[[], float]]:
  """Compiles the step of `setting`: its figures and a function that runs `block` steps
  and returns the mean seconds per step.

  The config is `configs/default.py`'s (Nesterov 0.9, cosine, clipping 5) with lr 0.1,
  weight decay 5e-4 in the loss and `setting.sam` over `rho`. Variants that skip the SAM
  pass on some steps (LookSAM, SAM every k) run as the loop runs them: one program with
  the pass and one without, picked per step by `registry.second_pass_schedule`; their
  FLOPs are a mean over 1,000 steps of that schedule.
  """
  s = setting
  config = default.get_config()
  config.update(
      dict(learning_rate=0.1, num_epochs=1, weight_decay=5e-4,
           sam=dict(dict(rho=rho), **dict(s.sam))))
  # SAMPa's step sees the previous batch too: twice the examples, each step one new batch
  layout = replicas.make_layout(s.batch_size, s.m, s.devices,
                                paired=registry.paired_batches(config.sam))
  mesh = replicas.make_mesh(layout.num_devices)
  model = get_model(s.model, s.num_classes, dtype=jnp.dtype(s.dtype))
  tx = optim.create_optimizer(config, 1000, replicas.REPLICA_AXES)
  image_shape = (s.image_size, s.image_size, 3)
  state = replicas.replicate(
      steps.init_train_state(model, tx, jax.random.key(0), image_shape), mesh)
  rng = np.random.default_rng(0)
  batch = replicas.shard_batch(
      {
          "image": rng.standard_normal((layout.global_batch,) + image_shape, np.float32),
          "label": rng.integers(0, s.num_classes, layout.global_batch).astype(np.int32),
      }, mesh)
  step = steps.make_train_step(model, tx, mesh, layout, l2_weight_decay=5e-4,
                               replica_mapping=s.mapping,
                               clean_gradient=registry.clean_gradient(config.sam))
  key = jax.random.key(1)

  whole_run = registry.second_pass_schedule(config.sam, config.seed, block)
  # late_phase: each block is a run in miniature, its last fraction with the second pass
  schedule = (lambda t: whole_run(t % block)) if config.sam.late_phase < 1 else whole_run
  # The host-decided variants may draw either kind at any step (randomized SAM): both.
  kinds = [None] if schedule(0) is None else [False, True]
  start = time.perf_counter()
  compiled = {kind: step.program(kind).lower(state, batch, key).compile() for kind in kinds}
  compile_s = time.perf_counter() - start
  temp_mb, peak_mb = max(memory_mb(c) for c in compiled.values())
  flops_of = {kind: compiled_flops(program) for kind, program in compiled.items()}
  flops = statistics.mean(flops_of[schedule(t)] for t in range(max(block, 1000)))
  if s.mapping == "scan" and layout.virtual_replicas > 1:
    flops = float("nan")  # XLA's cost analysis counts a loop body once, not once per trip
  carry = {"state": state, "t": 0}

  def run(count: int) -> float:
    state, t = carry["state"], carry["t"]
    start = time.perf_counter()
    for _ in range(count):
      state, metrics = compiled[schedule(t)](state, batch, key)
      t += 1
    jax.block_until_ready(metrics)  # pyright: ignore[reportPossiblyUnbound]
    carry.update(state=state, t=t)
    return (time.perf_counter() - start) / count

  if warmup:
    run(warmup)
  return Figures(layout, compile_s, flops, temp_mb, peak_mb), lambda: run(block)
