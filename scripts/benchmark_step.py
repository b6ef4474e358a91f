"""Times the train step of SGD, SAM and each SAM variant, and of virtual replicas.

Synthetic on-device batches (no TensorFlow needed), the real per-replica step. Prints
one line per setting with the step time, images/s, the compiled step's FLOPs per device
(XLA's cost analysis; a mean over the block for the variants that skip passes), the FLOP/s achieved
and their fraction of the device's peak, measured as the FLOP/s of a 2048 x 2048 matmul
in the same dtype on the same device. With --torch (PyTorch installed), the same
WideResNet's SGD and SAM steps in PyTorch (`torch_reference.py`) run in blocks
alternating with ours, and the ratio is printed. Then each step's ratio to SGD
(two forward-backward passes make 2.0 SAM's floor), the cost of virtual replicas over
the same global batch without them, and gradient accumulation (virtual replicas run
one after another by a scan) against the unrolled replicas, with the compiled step's
memory from XLA's memory analysis: working (temporaries) and peak (arguments + outputs +
temporaries - donated buffers).

Variants that skip the second pass on some steps (LookSAM, SAM every k, late-phase SAM: the
last fraction of each block) run as the
training loop runs them (one program with the pass, one without, picked per step by
`family.registry.second_pass_schedule`) and are timed in blocks of `--block` steps: a
step's time is a block's mean, the median over the blocks.

    python scripts/benchmark_step.py --model WideResnet16x4 --batch_size 128 --m 32
    python scripts/benchmark_step.py --only "SGD,LookSAM k=5"   # some rows only
    python scripts/benchmark_step.py --only SGD,SAM --torch      # against PyTorch
    python scripts/benchmark_step.py --study_variants --json costs.json
    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python scripts/benchmark_step.py --devices 2 --only SGD,SAM,SAMPa   # SAMPa's pair

SAMPa's step sees the previous batch with the current one: with 2 devices, each computes
one gradient on a whole batch while SGD and SAM split the batch over both.

--study_variants times instead SGD and every variant of the digits study
(`configs/digits_sharpness.py`'s VARIANTS, with their settings), the step costs of
`scripts/plot_frontier.py`; --json writes each row's step time and ratio to SGD.
"""

import argparse
import dataclasses
import json
import re
import statistics
import time

import jax

import step_timing  # scripts/, beside this file (puts the checkout on sys.path)
import torch_reference  # scripts/, beside this file
from configs.digits_sharpness import VARIANTS
from sam_jax import xla_cpu

# name: (config.sam fields, virtual replicas of --m examples?, replica_mapping)
SETTINGS = {
    "SGD": (dict(rho=0.0), False, "loop"),
    "SAM": (dict(), False, "loop"),
    "GSAM": (dict(variant="gsam", gsam_alpha=0.01), False, "loop"),
    "GCSAM": (dict(variant="gcsam"), False, "loop"),
    "WSAM": (dict(variant="wsam"), False, "loop"),
    "ESAM": (dict(variant="esam"), False, "loop"),
    "LookSAM k=5": (dict(variant="looksam", looksam_every=5), False, "loop"),
    "SAM every 5": (dict(every=5), False, "loop"),
    "MSAM": (dict(variant="msam", rho=3.0), False, "loop"),
    "SAM-ON": (dict(perturbation_mask="norm"), False, "loop"),
    "F-SAM": (dict(variant="fsam"), False, "loop"),
    "VaSSO": (dict(variant="vasso"), False, "loop"),
    "Functional-SAM": (dict(variant="functional"), False, "loop"),
    "bSAM": (dict(variant="bsam"), False, "loop"),
    "SAMPa": (dict(variant="sampa"), False, "loop"),  # with --devices 2: one group each
    "late-phase SAM 20%": (dict(late_phase=0.2), False, "loop"),  # its cost over a whole run
    "SAM virtual": (dict(), True, "loop"),
    "SAM accumulated": (dict(), True, "scan"),
}


def study_settings(rho: float) -> dict:
  """SGD and the digits study's variants as rows, with the study's settings (rho given as a
  multiple of SAM's there; GSAM from 2 rho down to rho)."""
  rows = {"SGD": (dict(rho=0.0), False, "loop")}
  for name, fields in VARIANTS.items():
    fields = dict(fields)
    fields.pop("run", None)  # the run's learning rate, decay and clipping: the same cost
    fields["rho"] = rho * fields.pop("rho", 1.0)
    if "gsam_rho_min" in fields:
      fields["rho"], fields["gsam_rho_min"] = 2 * rho, rho
    rows[name] = (fields, False, "loop")
  return rows


def parse_args():
  parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
  parser.add_argument("--model", default="WideResnet16x4")
  parser.add_argument("--batch_size", type=int, default=128, help="global batch")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--rho", type=float, default=0.05)
  parser.add_argument("--m", type=int, default=32,
                      help="examples per replica for the virtual-replica settings")
  parser.add_argument("--devices", type=int, default=None, help="default: all")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--block", type=int, default=5, help="steps per timed block")
  parser.add_argument("--blocks", type=int, default=3, help="timed blocks per setting")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  parser.add_argument(
      "--torch", action="store_true",
      help="also time the same WideResNet's SGD and SAM steps in PyTorch "
      "(optional dependency), blocks alternating with ours")
  parser.add_argument("--only", default=None,
                      help=f"comma-separated rows among: {', '.join(SETTINGS)}")
  parser.add_argument("--study_variants", action="store_true",
                      help="rows: SGD and the digits study's variants (see above)")
  parser.add_argument("--json", default=None, help="also write the rows' times to this file")
  return parser.parse_args()


def torch_block(args, rho: float):
  """run_block for the same WideResNet step in PyTorch, or None where it cannot run."""
  match = re.fullmatch(r"WideResnet(\d+)x(\d+)", args.model)
  if not (args.torch and match and torch_reference.available()) or args.dtype != "float32":
    return None
  step = torch_reference.make_step(
      int(match[1]), int(match[2]), args.num_classes, args.batch_size, args.image_size, rho)
  for _ in range(args.warmup):
    step()

  def run():
    start = time.perf_counter()
    for _ in range(args.block):
      step()
    return (time.perf_counter() - start) / args.block

  return run


def time_setting(args, name: str, peak: float, settings: dict) -> dict:
  """One row: the step's median time over blocks (PyTorch's blocks alternating with ours)."""
  sam, virtual, mapping = settings[name]
  figures, run_block = step_timing.prepare(
      step_timing.Setting(args.model,
                          args.batch_size, args.image_size, args.num_classes, args.dtype,
                          tuple(sam.items()), args.m if virtual else None, mapping, args.devices),
      args.rho, args.block, args.warmup)
  torch_run = torch_block(args, args.rho if name == "SAM" else 0.0) if name in ("SGD",
                                                                                "SAM") else None
  times, torch_times = [], []
  for _ in range(args.blocks):
    times.append(run_block())
    if torch_run:
      torch_times.append(torch_run())
  median = statistics.median(times)
  facts = dataclasses.asdict(figures) | {"layout": figures.layout}
  return dict(facts, median=median, images_per_s=args.batch_size / median,
              flops_per_s=figures.flops / median, fraction=figures.flops / median / peak,
              torch=statistics.median(torch_times) if torch_times else None)


def main():
  args = parse_args()
  xla_cpu.set_defaults()  # as the training binary: before JAX starts its CPU backend
  print(f"{args.model}, global batch {args.batch_size}, {args.image_size}x{args.image_size}, "
        f"{args.dtype}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}")
  settings = study_settings(args.rho) if args.study_variants else SETTINGS
  names = args.only.split(",") if args.only else list(settings)
  unknown = [name for name in names if name not in settings]
  if unknown:
    raise SystemExit(f"Unknown rows {unknown}: choose among {', '.join(settings)}.")
  peak = step_timing.matmul_peak(args.dtype)
  print(f"peak: a 2048 x 2048 {args.dtype} matmul runs at {peak / 1e9:.1f} GFLOP/s on one "
        "device (the fraction of peak below is against it; no FLOPs for a scan, whose body "
        "XLA's cost analysis counts once)")
  if args.torch and not torch_reference.available():
    print("--torch: PyTorch is not installed (pip install torch): no PyTorch rows")
  results = {}
  for name in names:
    r = results[name] = time_setting(args, name, peak, settings)
    lay = r["layout"]
    print(
        f"{name:<16} {lay.num_devices} dev x {lay.virtual_replicas} virtual x "
        f"m={lay.examples_per_replica:<4} {1000 * r['median']:8.1f} ms/step "
        f"{r['images_per_s']:7.1f} images/s  {r['flops'] / 1e9:7.1f} GFLOP/device "
        f"{r['flops_per_s'] / 1e9:6.1f} GFLOP/s ({100 * r['fraction']:4.1f}% of peak)  "
        f"{r['temp_mb']:6.1f} MiB working, {r['peak_mb']:6.1f} MiB peak  "
        f"(compile {r['compile_s']:.1f} s)", flush=True)
    if r["torch"]:
      print(
          f"{'  PyTorch ' + torch_version():<16} same step {1000 * r['torch']:8.1f} ms/step "
          f"{args.batch_size / r['torch']:7.1f} images/s: ours / PyTorch's "
          f"{r['median'] / r['torch']:.2f}", flush=True)
  if "SGD" in results:
    sgd = results["SGD"]["median"]
    print("step time / SGD's: " + ", ".join(
        f"{name} {r['median'] / sgd:.2f}" for name, r in results.items() if name != "SGD"))
  if args.json:
    sgd = results["SGD"]["median"] if "SGD" in results else float("nan")
    with open(args.json, "w") as f:
      json.dump(
          {
              "setup": f"{args.model}, batch {args.batch_size}, {jax.devices()[0].device_kind}",
              "rows": {
                  name: {
                      "ms": 1000 * r["median"],
                      "ratio_to_sgd": r["median"] / sgd
                  } for name, r in results.items()
              }
          }, f, indent=1)
  if {"SAM", "SAM virtual"} <= set(results):
    print(f"virtual replicas (m={args.m}) over none: "
          f"{100 * (results['SAM virtual']['median'] / results['SAM']['median'] - 1):+.1f}%")
  if {"SAM virtual", "SAM accumulated"} <= set(results):
    loop, scan = results["SAM virtual"], results["SAM accumulated"]
    print(f"gradient accumulation (a scan over {loop['layout'].virtual_replicas} micro-batches) "
          f"against the unrolled replicas: time {scan['median'] / loop['median']:.2f}x, working "
          f"memory {scan['temp_mb'] / loop['temp_mb']:.2f}x, peak memory "
          f"{scan['peak_mb'] / loop['peak_mb']:.2f}x")


def torch_version() -> str:
  import torch  # pyright: ignore[reportMissingImports]  (optional)
  return torch.__version__.split("+")[0]


if __name__ == "__main__":
  main()
