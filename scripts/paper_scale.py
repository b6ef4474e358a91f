"""What the paper's largest runs need per device, from the compiled step's memory analysis.

For each setting the real SAM train step (SGD + Nesterov, the model's own optimizer state)
is compiled for ONE device holding ONE replica of m examples, the per-device footprint of
a data-parallel run with one replica per device, and XLA's memory analysis is printed:
the state (parameters, optimizer, BatchNorm statistics) that every device holds, the
temporaries of one step at m, and the bytes each device sends per step in the gradient
all-reduce (a ring all-reduce moves 2 (D-1)/D times the gradient's size).

    python scripts/paper_scale.py                      # the three paper settings
    python scripts/paper_scale.py --only WideResnet28x10

Compiling on the CPU gives the CPU's buffer assignment; an accelerator's differs by its
layouts and fusions, so read the figures as the right order of magnitude (bfloat16 is
computed through float32 on the CPU: its figures say nothing about an accelerator's).
EfficientNet-L2-475 did not compile within 7 minutes on a 2-core CPU.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402
from sam_jax import optim, replicas, steps, xla_cpu  # noqa: E402
from sam_jax.models import get_model  # noqa: E402

# (model, classes, image side, m, global batch): the paper's settings (Sec. 3.1, 3.2).
SETTINGS = [
    ("WideResnet28x10", 10, 32, 32, 256),  # CIFAR-10, 8 GPUs, m = 32
    ("Resnet50", 1000, 224, 128, 4096),  # ImageNet, 32 TPUv3 cores, m = 128
    ("efficientnet-l2-475", 1000, 475, 1, 512),  # finetuning; m = 1 per device shown
]


def footprint(model_name: str, num_classes: int, side: int, m: int, dtype: str) -> dict:
  """Compiles one replica's SAM step on one device; returns its memory figures in bytes."""
  model = get_model(model_name, num_classes, dtype=jnp.dtype(dtype))
  config = default.get_config()
  tx = optim.create_optimizer(config, 1000, replicas.REPLICA_AXES)
  mesh = replicas.make_mesh(1)
  layout = replicas.make_layout(m, m, num_devices=1)
  state = jax.eval_shape(lambda: steps.init_train_state(model, tx, jax.random.key(0),
                                                        (side, side, 3)))
  batch = {
      "image": jax.ShapeDtypeStruct((m, side, side, 3), jnp.float32),
      "label": jax.ShapeDtypeStruct((m,), jnp.int32)
  }
  step = steps.make_train_step(model, tx, mesh, layout)
  started = time.monotonic()
  compiled = step.program().lower(state, batch, jax.random.key(1)).compile()
  memory = compiled.memory_analysis()
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  return {
      "params": params,
      "state": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)),
      "temp": memory.temp_size_in_bytes,
      "total": (memory.argument_size_in_bytes + memory.output_size_in_bytes +
                memory.temp_size_in_bytes - memory.alias_size_in_bytes),
      "compile_s": time.monotonic() - started
  }


def main():
  parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
  parser.add_argument("--only", default=None, help="one model of the table")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = parser.parse_args()
  xla_cpu.set_defaults()  # as the training binary: before JAX starts its CPU backend
  gib = 2.0 ** 30
  print(f"{'model':22} {'side':>4} {'m':>4} {'params':>8} {'state GiB':>9} {'step temp GiB':>13} "
        f"{'device GiB':>10} {'devices':>7} {'all-reduce GiB/step':>19} {'compile s':>9}")
  for name, classes, side, m, batch in SETTINGS:
    if args.only and name != args.only:
      continue
    f = footprint(name, classes, side, m, args.dtype)
    devices = batch // m
    ring = 2 * (devices - 1) / devices * f["params"] * 4  # float32 gradients
    print(
        f"{name:22} {side:>4} {m:>4} {f['params'] / 1e6:>7.1f}M {f['state'] / gib:>9.2f} "
        f"{f['temp'] / gib:>13.2f} {f['total'] / gib:>10.2f} {devices:>7} "
        f"{ring / gib:>19.2f} {f['compile_s']:>9.0f}", flush=True)


if __name__ == "__main__":
  main()
