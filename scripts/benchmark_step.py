"""Times the train step of SGD, SAM and each SAM variant, and of virtual replicas.

Synthetic on-device batches (no TensorFlow needed), the real per-replica step. Prints
one line per setting with the step time and images/s, then each step's ratio to SGD
(two forward-backward passes make 2.0 SAM's floor), the cost of virtual replicas over
the same global batch without them, and gradient accumulation (virtual replicas run
one after another by a scan) against the unrolled replicas, with the compiled step's
memory from XLA's memory analysis: working (temporaries) and peak (arguments + outputs +
temporaries - donated buffers).

Variants that skip the second pass on some steps (LookSAM, SAM every k) run as the
training loop runs them (one program with the pass, one without, picked per step by
`optim.sam_schedule`) and are timed in blocks of `--block` steps: a step's time is a
block's mean, the median over the blocks.

    python scripts/benchmark_step.py --model WideResnet16x4 --batch_size 128 --m 32
    python scripts/benchmark_step.py --only "SGD,LookSAM k=5"   # some rows only
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402  (the checkout's configs/, by path)
from sam_jax import optim, replicas, steps  # noqa: E402
from sam_jax.models import get_model  # noqa: E402


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
    "SAM virtual": (dict(), True, "loop"),
    "SAM accumulated": (dict(), True, "scan"),
}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
  parser.add_argument("--only", default=None,
                      help=f"comma-separated rows among: {', '.join(SETTINGS)}")
  return parser.parse_args()


def time_setting(args, sam: dict, m: int | None, mapping: str) -> dict:
  """Compiles the step for one setting and returns its median time per step over blocks."""
  layout = replicas.make_layout(args.batch_size, m, args.devices)
  mesh = replicas.make_mesh(layout.num_devices)
  model = get_model(args.model, args.num_classes, dtype=jnp.dtype(args.dtype))
  config = default.get_config()  # SGD, Nesterov 0.9, cosine, clipping 5
  config.update(dict(learning_rate=0.1, num_epochs=1, weight_decay=5e-4,
                     sam=dict(dict(rho=args.rho), **sam)))
  tx = optim.create_optimizer(config, 1000, replicas.REPLICA_AXES)
  image_shape = (args.image_size, args.image_size, 3)
  state = replicas.replicate(
      steps.init_train_state(model, tx, jax.random.key(0), image_shape), mesh)
  rng = np.random.default_rng(0)
  batch = replicas.shard_batch({
      "image": rng.standard_normal((args.batch_size,) + image_shape, np.float32),
      "label": rng.integers(0, args.num_classes, args.batch_size).astype(np.int32),
  }, mesh)
  step = steps.make_train_step(model, tx, mesh, layout, l2_weight_decay=5e-4,
                               replica_mapping=mapping)
  key = jax.random.key(1)

  schedule = optim.sam_schedule(config)  # the variants that skip the SAM pass on some steps
  kinds = sorted({schedule(t) for t in range(args.block)}, key=str)
  start = time.perf_counter()
  compiled = {kind: step.program(kind).lower(state, batch, key).compile() for kind in kinds}
  compile_s = time.perf_counter() - start
  memory = max((c.memory_analysis() for c in compiled.values()),
               key=lambda m: m.temp_size_in_bytes if m else 0)
  t = 0
  for _ in range(args.warmup):
    state, metrics = compiled[schedule(t)](state, batch, key)
    t += 1
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.blocks):
    start = time.perf_counter()
    for _ in range(args.block):
      state, metrics = compiled[schedule(t)](state, batch, key)
      t += 1
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - start) / args.block)
  median = statistics.median(times)
  return dict(layout=layout, median=median, compile=compile_s,
              images_per_s=args.batch_size / median,
              temp_mb=memory.temp_size_in_bytes / 2**20 if memory else float("nan"),
              peak_mb=(memory.argument_size_in_bytes + memory.output_size_in_bytes
                       + memory.temp_size_in_bytes - memory.alias_size_in_bytes) / 2**20
              if memory else float("nan"))


def main():
  args = parse_args()
  print(f"{args.model}, global batch {args.batch_size}, {args.image_size}x{args.image_size}, "
        f"{args.dtype}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}")
  names = args.only.split(",") if args.only else list(SETTINGS)
  unknown = [name for name in names if name not in SETTINGS]
  if unknown:
    raise SystemExit(f"Unknown rows {unknown}: choose among {', '.join(SETTINGS)}.")
  results = {}
  for name in names:
    sam, virtual, mapping = SETTINGS[name]
    r = results[name] = time_setting(args, sam, args.m if virtual else None, mapping)
    lay = r["layout"]
    label = name
    print(f"{label:<26} {lay.num_devices} dev x {lay.virtual_replicas} virtual x "
          f"m={lay.examples_per_replica:<4} {1000 * r['median']:9.1f} ms/step  "
          f"{r['images_per_s']:8.1f} images/s  {r['temp_mb']:7.1f} MiB working, "
          f"{r['peak_mb']:7.1f} MiB peak memory  "
          f"(compile {r['compile']:.1f} s)", flush=True)
  if "SGD" in results:
    sgd = results["SGD"]["median"]
    print("step time / SGD's: " + ", ".join(
        f"{name} {r['median'] / sgd:.2f}" for name, r in results.items() if name != "SGD"))
  if {"SAM", "SAM virtual"} <= set(results):
    print(f"virtual replicas (m={args.m}) over none: "
          f"{100 * (results['SAM virtual']['median'] / results['SAM']['median'] - 1):+.1f}%")
  if {"SAM virtual", "SAM accumulated"} <= set(results):
    loop, scan = results["SAM virtual"], results["SAM accumulated"]
    print(f"gradient accumulation (a scan over {loop['layout'].virtual_replicas} micro-batches) "
          f"against the unrolled replicas: time {scan['median'] / loop['median']:.2f}x, working "
          f"memory {scan['temp_mb'] / loop['temp_mb']:.2f}x, peak memory "
          f"{scan['peak_mb'] / loop['peak_mb']:.2f}x")

if __name__ == "__main__":
  main()
