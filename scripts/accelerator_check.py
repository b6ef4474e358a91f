"""The accelerator check: one command that verifies and measures the train step on one
accelerator, prints one table and writes everything it found as JSON.

    python scripts/accelerator_check.py --json accelerator_check.json
    python scripts/accelerator_check.py --dry_run   # tiny models on any device, every path

In order, within `--budget_seconds` of wall time (default 450 s: 8 minutes with Python's
start-up and a margin):

1. The environment: device, driver, CUDA (or other) platform version, package versions.
2. The device's matmul peak, measured in bfloat16 and in float32 at JAX's default
   precision (TensorFloat-32 on A100/H100, one bfloat16 pass on TPU): the references of
   the table's fractions of peak.
3. Correctness: one SAM step (WRN-16-2, batch 32 in 2 replicas of m = 16, the default
   replica mapping) on the device against the same step on the host CPU, both float32,
   each measured by its distance from the same step in float64 on the CPU: the relative
   error ||dw - dw64|| / ||dw64|| of the update dw of all parameters (the float64 step
   rounds only its logits to float32, as every model returns them). Rounding alone
   separates a float32 step from the float64 one, by an amount that depends on the order
   of the sums and the convolution algorithms, not on the hardware: the device passes
   when its error is at most 10 times the CPU's (room for cuDNN's algorithm choices),
   computed at "highest" matmul precision; its error at the default precision (TF32) is
   printed beside it. As a scale, the update's change for a 1% larger rho is printed too:
   a real fault (examples given to the wrong replica, a wrong reduction) moves the step
   by at least that much.
4. Training: 300 steps of the real train step (the binary's optimizer chain, SAM with
   rho 0.05, WRN-16-4, 4 replicas of m = 32, the default mapping and dtype) on a
   synthetic task (ten noisy class templates) must halve the loss.
5. The table: WideResNet-28-10 (CIFAR-sized, batch 256 in 8 virtual replicas of m = 32,
   the paper's per-GPU setting) with each replica mapping, and ResNet-50 (224 x 224,
   batch 256 in replicas of m = 32 and unsplit), float32 and bfloat16, SGD and SAM:
   median step time, images/s, achieved TFLOP/s (XLA's cost analysis; none for a scan,
   whose body XLA counts once: the same step's count under another mapping stands in),
   fractions of the bfloat16 and float32 peaks, compiled memory, compile time, SAM / SGD.
   Settings run in order of what they decide (dtype and mapping on WRN-28-10 first), the
   largest last; a pair (SGD, SAM) that would not end within the budget, as
   estimated from those measured, is skipped and listed.

It needs jax, flax, optax, numpy and ml_collections (pure Python): no TensorFlow, clu,
TFDS or network. On a machine without ml_collections, bring its wheel (docs/guides/benchmarks.md,
"GPU and TPU: the accelerator check").
"""

import argparse
import dataclasses
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import step_timing  # scripts/, beside this file (puts the checkout on sys.path)
from configs import default
from sam_jax import optim, replicas, steps, xla_cpu
from sam_jax.models import get_model

clock = time.monotonic  # what the budget is measured with
START = clock()


@dataclasses.dataclass(frozen=True)
class Group:
  """Settings timed together: SGD, then SAM, on one model, layout, mapping and dtype."""
  model: str
  image_size: int
  num_classes: int
  batch_size: int
  m: int | None  # None: unsplit, one replica
  mapping: str
  dtype: str

  def setting(self, sam: bool) -> step_timing.Setting:
    return step_timing.Setting(self.model, self.batch_size, self.image_size, self.num_classes,
                               self.dtype, () if sam else (("rho", 0.0),), self.m, self.mapping,
                               devices=1)

  @property
  def virtual_replicas(self) -> int:
    return self.batch_size // self.m if self.m else 1


def groups(dry_run: bool) -> list[Group]:
  """The table's settings in the order they run: what decides the accelerator defaults
  first (dtype, then mapping, on WRN-28-10), ResNet-50 after, the largest last."""
  if dry_run:  # each model, mapping, dtype and layout once, at a size a CPU runs in seconds
    wrn, resnet = ("WideResnet10x1", 8, 10, 16, 8), ("Resnet8", 8, 10, 16)
    return [
        Group(*wrn, "vmap", "bfloat16"),
        Group(*wrn, "scan", "bfloat16"),
        Group(*wrn, "loop", "float32"),
        Group(*resnet, None, "vmap", "float32"),
    ]
  wrn, resnet = ("WideResnet28x10", 32, 10, 256, 32), ("Resnet50", 224, 1000, 256, 32)
  return [
      Group(*wrn, "vmap", "bfloat16"),
      Group(*wrn, "vmap", "float32"),
      Group(*wrn, "scan", "bfloat16"),
      Group(*wrn, "loop", "bfloat16"),
      Group(*resnet[:4], None, "vmap", "bfloat16"),
      Group(*resnet, "vmap", "bfloat16"),
      Group(*resnet[:4], None, "vmap", "float32"),
      Group(*resnet, "vmap", "float32"),
      Group(*wrn, "scan", "float32"),
      Group(*wrn, "loop", "float32"),
  ]


def estimate(group: Group, measured: dict[Group, float]) -> float | None:
  """Seconds `group` will take, from the groups `measured` (seconds each): the longest of
  the same model, layout and mapping; else of the same model, times the virtual replicas
  for an unrolled loop (a program that many times larger to compile); else the longest
  of any; None before the first."""
  same_model = [s for g, s in measured.items() if g.model == group.model]
  alike = [
      s for g, s in measured.items()
      if (g.model, g.m, g.mapping) == (group.model, group.m, group.mapping)
  ]
  if alike:
    return max(alike)
  if same_model:
    return max(same_model) * (group.virtual_replicas if group.mapping == "loop" else 1)
  return max(measured.values(), default=None)


# --- 1, 2: the environment and the peaks ---


def environment() -> dict[str, Any]:
  device = jax.devices()[0]
  info: dict[str, Any] = {
      "device": device.device_kind,
      "platform": device.platform,
      "platform_version": jax.extend.backend.get_backend().platform_version,
      "python": platform.python_version(),
  }
  for name in ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections"):
    info[name] = sys.modules[name].__version__ if name in sys.modules else _version(name)
  if shutil.which("nvidia-smi"):
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30)
    info["nvidia_smi"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
  stats = device.memory_stats() or {}
  if "bytes_limit" in stats:
    info["memory_gib"] = stats["bytes_limit"] / 2 ** 30
  return info


def _version(name: str) -> str | None:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  try:
    return metadata.version(name)
  except metadata.PackageNotFoundError:
    return None


def peaks(dry_run: bool) -> dict[str, float]:
  """FLOP/s of a square matmul in each dtype at the default precision."""
  n = 256 if dry_run else 8192
  return {
      dtype: step_timing.matmul_peak(dtype, n, repeats=5 if dry_run else 20)
      for dtype in ("bfloat16", "float32")
  }


# --- 3: one SAM step on the device against the CPU and float64 ---


def cpu_mesh() -> Mesh:
  return Mesh(np.array(jax.devices("cpu")[:1]), (replicas.DEVICE_AXIS,))


def sam_config(rho: float = 0.05, steps_per_run: int = 1000):
  config = default.get_config()
  config.update(dict(learning_rate=0.1, num_epochs=1, weight_decay=5e-4, sam=dict(rho=rho)))
  return config, optim.create_optimizer(config, steps_per_run, replicas.REPLICA_AXES)


def one_update(model_name: str, host_state: Any, batch: dict[str, np.ndarray], m: int, mesh: Mesh,
               dtype: Any, rho: float = 0.05) -> np.ndarray:
  """The parameter update of one SAM step on `mesh` in `dtype`, flattened to float64, with
  the mapping a run on that device gets by default."""
  model = get_model(model_name, 10, dtype=dtype)
  _, tx = sam_config(rho)
  layout = replicas.make_layout(len(batch["label"]), m, 1)
  mapping = "loop" if mesh.devices.flat[0].platform == "cpu" else replicas.resolve_mapping("auto")
  step = steps.make_train_step(model, tx, mesh, layout, l2_weight_decay=5e-4,
                               replica_mapping=mapping)
  cast = lambda x: x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x
  state = replicas.replicate(jax.tree.map(cast, host_state), mesh)
  images = replicas.shard_batch(dict(batch, image=batch["image"].astype(dtype)), mesh)
  before = [np.asarray(x, np.float64) for x in jax.tree.leaves(host_state.params)]
  new_state, _ = step(state, images, jax.random.key(1))
  after = [np.asarray(x, np.float64) for x in jax.tree.leaves(new_state.params)]
  return np.concatenate([(a - b).ravel() for a, b in zip(after, before)])


def check_step(dry_run: bool) -> dict[str, Any]:
  name, size, batch_size, m = ("WideResnet10x1", 8, 16, 8) if dry_run else ("WideResnet16x2", 32,
                                                                            32, 16)
  _, tx = sam_config()
  with jax.default_device(jax.devices("cpu")[0]):
    host_state = jax.device_get(
        steps.init_train_state(get_model(name, 10), tx, jax.random.key(0), (size, size, 3)))
  rng = np.random.default_rng(0)
  batch = {
      "image": rng.standard_normal((batch_size, size, size, 3)).astype(np.float32),
      "label": rng.integers(0, 10, batch_size).astype(np.int32)
  }
  device_mesh = replicas.make_mesh(1)
  run = lambda mesh, dtype, rho=0.05: one_update(name, host_state, batch, m, mesh, dtype, rho)
  with jax.enable_x64(True):
    exact = run(cpu_mesh(), jnp.float64)
    larger_rho = run(cpu_mesh(), jnp.float64, rho=0.05 * 1.01)
  error = lambda update: float(np.linalg.norm(update - exact) / np.linalg.norm(exact))
  cpu = error(run(cpu_mesh(), jnp.float32))
  with jax.default_matmul_precision("highest"):
    device_highest = error(run(device_mesh, jnp.float32))
  device_default = error(run(device_mesh, jnp.float32))
  tolerance = 10 * cpu
  return dict(model=name, batch=batch_size, m=m, cpu_float32_error=cpu,
              device_float32_highest_error=device_highest,
              device_float32_default_error=device_default, rho_one_percent_change=error(larger_rho),
              tolerance=tolerance, passed=device_highest <= tolerance)


# --- 4: the real train step lowers the loss ---


def check_training(dry_run: bool) -> dict[str, Any]:
  name, size, batch_size, m, count = (("WideResnet10x1", 8, 32, 16, 40) if dry_run else
                                      ("WideResnet16x4", 32, 128, 32, 300))
  config, tx = sam_config(steps_per_run=count)
  model = get_model(name, 10, dtype=jnp.dtype(config.dtype))
  mesh = replicas.make_mesh(1)
  layout = replicas.make_layout(batch_size, m, 1)
  step = steps.make_train_step(model, tx, mesh, layout, l2_weight_decay=5e-4,
                               replica_mapping=replicas.resolve_mapping(config.replica_mapping))
  state = replicas.replicate(
      steps.init_train_state(model, tx, jax.random.key(0), (size, size, 3)), mesh)
  rng = np.random.default_rng(0)
  templates = rng.standard_normal((10, size, size, 3)).astype(np.float32)
  losses = []
  for _ in range(count):
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    images = templates[labels] + rng.standard_normal(templates[labels].shape).astype(np.float32)
    state, metrics = step(state, replicas.shard_batch({
        "image": images,
        "label": labels
    }, mesh), jax.random.key(1))
    losses.append(metrics["loss"])
  losses = [float(x) for x in jax.device_get(losses)]
  tenth = max(count // 10, 1)
  first, last = statistics.mean(losses[:tenth]), statistics.mean(losses[-tenth:])
  return dict(model=name, steps=count, batch=batch_size, m=m, dtype=config.dtype,
              mapping=replicas.resolve_mapping(config.replica_mapping), first_loss=first,
              last_loss=last, passed=bool(last < first / 2))


# --- 5: the table ---


def time_group(group: Group, peak: dict[str, float], flops_of: dict[tuple, float], rho: float,
               blocks: int, block: int) -> list[dict[str, Any]]:
  rows = []
  for sam in (False, True):
    figures, run_block = step_timing.prepare(group.setting(sam), rho, block)
    median = statistics.median(run_block() for _ in range(blocks))
    key = (group.model, group.m, group.dtype, sam)
    flops = figures.flops
    if math.isnan(flops):  # a scan: the same arithmetic as counted under another mapping
      flops = flops_of.get(key, float("nan"))
    else:
      flops_of[key] = flops
    rows.append(
        dict(
            dataclasses.asdict(group), optimizer="SAM" if sam else "SGD",
            virtual_replicas=group.virtual_replicas, step_ms=1000 * median,
            images_per_s=group.batch_size / median, tflops_per_s=flops / median / 1e12,
            fraction_of_bf16_peak=flops / median / peak["bfloat16"],
            fraction_of_f32_peak=flops / median / peak["float32"],
            working_gib=figures.temp_mb / 1024, peak_gib=figures.peak_mb / 1024,
            compile_s=figures.compile_s))
  rows[1]["sam_over_sgd"] = rows[1]["step_ms"] / rows[0]["step_ms"]
  return rows


HEADER = ("| model | batch, m x V | mapping | dtype | opt | step ms | images/s | TFLOP/s "
          "| % bf16 peak | % f32 peak | working GiB | peak GiB | compile s | SAM / SGD |")


def table_row(r: dict[str, Any]) -> str:
  layout = f"{r['batch_size']}, {r['m']} x {r['virtual_replicas']}" if r["m"] else (
      f"{r['batch_size']}, unsplit")
  ratio = f"{r['sam_over_sgd']:.2f}" if "sam_over_sgd" in r else ""
  return (f"| {r['model']} | {layout} | {r['mapping'] if r['m'] else '-'} | {r['dtype']} | "
          f"{r['optimizer']} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | "
          f"{r['tflops_per_s']:.2f} | {100 * r['fraction_of_bf16_peak']:.1f} | "
          f"{100 * r['fraction_of_f32_peak']:.1f} | {r['working_gib']:.2f} | "
          f"{r['peak_gib']:.2f} | {r['compile_s']:.1f} | {ratio} |")


def describe(group: Group) -> str:
  layout = f"m = {group.m} x {group.virtual_replicas}, {group.mapping}" if group.m else "unsplit"
  return f"{group.model} ({layout}, {group.dtype})"


# --- the command ---


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
  parser.add_argument("--json", default="accelerator_check.json",
                      help="where the results go (rewritten after each step of the check)")
  parser.add_argument("--budget_seconds", type=float, default=450.0,
                      help="wall time for everything, from the start of the script")
  parser.add_argument(
      "--dry_run", action="store_true",
      help="tiny models and few steps on whatever device there is: every "
      "code path in about a minute (what CI runs)")
  parser.add_argument("--blocks", type=int, default=3, help="timed blocks per setting")
  parser.add_argument("--block", type=int, default=5, help="steps per timed block")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  left = lambda: START + args.budget_seconds - clock()
  xla_cpu.set_defaults()  # the CPU reference runs on the host, as in the training binary
  results: dict[str, Any] = {"dry_run": args.dry_run, "rows": [], "skipped": []}

  def save() -> None:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)

  results["environment"] = env = environment()
  print("accelerator check: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
  results["peak_flops"] = peak = peaks(args.dry_run)
  print("matmul peak: " + ", ".join(f"{d} {p / 1e12:.1f} TFLOP/s" for d, p in peak.items()),
        flush=True)
  save()

  results["step"] = c = check_step(args.dry_run)
  print(
      f"one SAM step ({c['model']}, batch {c['batch']}, m = {c['m']}) against float64 on the "
      f"CPU, relative error of the update: device float32 {c['device_float32_highest_error']:.2e}"
      f" at highest precision, {c['device_float32_default_error']:.2e} at the default; CPU "
      f"float32 {c['cpu_float32_error']:.2e}; tolerance {c['tolerance']:.2e} (10x the CPU's); "
      f"a 1% larger rho changes it by {c['rho_one_percent_change']:.2e}: "
      f"{'PASS' if c['passed'] else 'FAIL'}", flush=True)
  save()

  results["training"] = t = check_training(args.dry_run)
  print(
      f"training: {t['steps']} SAM steps of {t['model']} ({t['dtype']}, {t['mapping']}, "
      f"m = {t['m']}) take the loss from {t['first_loss']:.3f} to {t['last_loss']:.3f} "
      f"(mean of the first and last tenth; must halve): "
      f"{'PASS' if t['passed'] else 'FAIL'}", flush=True)
  save()

  print(HEADER)
  print("|" + " --- |" * (HEADER.count("|") - 1), flush=True)
  measured: dict[Group, float] = {}
  flops_of: dict[tuple, float] = {}
  for group in groups(args.dry_run):
    guess = estimate(group, measured)
    if guess is not None and guess > left():
      results["skipped"].append(dict(dataclasses.asdict(group), estimate_s=guess, left_s=left()))
      print(
          f"skipped: {describe(group)}, SGD and SAM: about {guess:.0f} s needed, "
          f"{max(left(), 0):.0f} s left", flush=True)
      save()
      continue
    start = clock()
    for row in time_group(group, peak, flops_of, 0.05, args.blocks, args.block):
      results["rows"].append(row)
      print(table_row(row), flush=True)
    measured[group] = clock() - start
    save()

  results["seconds"] = clock() - START
  results["passed"] = c["passed"] and t["passed"]
  save()
  print(
      f"{len(results['rows'])} rows, {len(results['skipped'])} settings skipped, "
      f"{results['seconds']:.0f} s; written to {args.json}", flush=True)
  return results


if __name__ == "__main__":
  sys.exit(0 if main()["passed"] else 1)
