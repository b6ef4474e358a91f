"""Times the SAM train step against plain SGD, and virtual replicas against none.

Synthetic on-device batches (no TensorFlow needed), the real per-replica step.
Prints one line per setting with the median step time and images/s, then the
SAM/SGD ratio (two forward-backward passes make 2.0 the floor) and the cost of
virtual replicas over the same global batch without them.

    python scripts/benchmark_step.py --model WideResnet16x4 --batch_size 128 --m 32
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


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="WideResnet16x4")
  parser.add_argument("--batch_size", type=int, default=128, help="global batch")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--rho", type=float, default=0.05)
  parser.add_argument("--m", type=int, default=32,
                      help="examples per replica for the virtual-replica setting")
  parser.add_argument("--devices", type=int, default=None, help="default: all")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  return parser.parse_args()


def time_setting(args, rho: float, m: int | None) -> dict:
  """Compiles the step for one (rho, m) and returns its median time over `args.steps`."""
  layout = replicas.make_layout(args.batch_size, m, args.devices)
  mesh = replicas.make_mesh(layout.num_devices)
  model = get_model(args.model, args.num_classes, dtype=jnp.dtype(args.dtype))
  config = default.get_config()  # SGD, Nesterov 0.9, cosine, clipping 5
  config.update(dict(learning_rate=0.1, num_epochs=1, weight_decay=5e-4, sam=dict(rho=rho)))
  tx = optim.create_optimizer(config, 1000, replicas.REPLICA_AXES)
  image_shape = (args.image_size, args.image_size, 3)
  state = replicas.replicate(
      steps.init_train_state(model, tx, jax.random.key(0), image_shape), mesh)
  rng = np.random.default_rng(0)
  batch = replicas.shard_batch({
      "image": rng.standard_normal((args.batch_size,) + image_shape, np.float32),
      "label": rng.integers(0, args.num_classes, args.batch_size).astype(np.int32),
  }, mesh)
  step = steps.make_train_step(model, tx, mesh, layout, l2_weight_decay=5e-4)
  key = jax.random.key(1)

  start = time.perf_counter()
  state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  for _ in range(args.warmup):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return dict(layout=layout, median=median, compile=compile_s,
              images_per_s=args.batch_size / median)


def main():
  args = parse_args()
  print(f"{args.model}, global batch {args.batch_size}, {args.image_size}x{args.image_size}, "
        f"{args.dtype}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}")
  settings = [("SGD (rho=0)", 0.0, None), (f"SAM (rho={args.rho})", args.rho, None),
              (f"SAM (rho={args.rho}), m={args.m}", args.rho, args.m)]
  results = {}
  for name, rho, m in settings:
    r = results[name] = time_setting(args, rho, m)
    lay = r["layout"]
    print(f"{name:<28} {lay.num_devices} dev x {lay.virtual_replicas} virtual x "
          f"m={lay.examples_per_replica:<4} median {1000 * r['median']:9.1f} ms/step  "
          f"{r['images_per_s']:9.1f} images/s  (compile {r['compile']:.1f} s)", flush=True)
  sgd, sam_plain, sam_virtual = (results[name]["median"] for name, _, _ in settings)
  print(f"SAM/SGD step-time ratio: {sam_plain / sgd:.3f}")
  print(f"virtual replicas (m={args.m}) over none: {100 * (sam_virtual / sam_plain - 1):+.1f}%")


if __name__ == "__main__":
  main()
