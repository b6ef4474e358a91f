"""Times the gradient of a small conv net at the top of a program, in a `lax.cond` branch
and in a `lax.map` (scan) body on this machine's JAX backend: what gradient accumulation
and a compiled-in SAM schedule pay on XLA:CPU (jax-ml/jax#12868), with JAX's own
convolution gradient and with `sam_jax.convolution`'s canonical gradients.

    python scripts/benchmark_nested_convolutions.py --batch 32
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sam_jax import convolution, xla_cpu  # noqa: E402

NHWC = ("NHWC", "HWIO", "NHWC")


def loss(x, kernels, conv):
  """Three 3x3 convolutions (the middle one strided), tanh between."""
  for kernel, stride in zip(kernels, (1, 2, 1)):
    x = jnp.tanh(conv(x, kernel, (stride, stride), "SAME", dimension_numbers=NHWC))
  return x.sum()


def median_seconds(fn, *args, repeats=5) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--channels", type=int, default=64)
  args = parser.parse_args()
  xla_cpu.set_defaults()  # as the training binary: before JAX starts its CPU backend
  x = jnp.ones((args.batch, 32, 32, args.channels))
  kernels = [jnp.full((3, 3, args.channels, args.channels), 0.01) for _ in range(3)]
  half = args.batch // 2
  print(f"batch {args.batch}, 32x32x{args.channels}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}; gradient w.r.t. input and kernels, median of 5; ratios to "
        "JAX's gradient at the top of the program")
  top = None  # JAX's gradient at the top of the program: the reference of every ratio
  for name, conv in (("JAX's gradient", lax.conv_general_dilated),
                     ("canonical gradients", convolution.conv_general_dilated)):
    grad = jax.grad(lambda x, k: loss(x, k, conv), argnums=(0, 1))
    with convolution.in_loop_body():  # the canonical gradient applies only in there
      settings = {
          "top of the program": jax.jit(grad),
          "lax.cond branch":
              jax.jit(lambda x, k: lax.cond(x[0, 0, 0, 0] > 0, lambda: grad(x, k), lambda: (x, k))),
          "two halves, unrolled":
              jax.jit(lambda x, k: [grad(x[:half], k), grad(x[half:], k)]),
          "two halves, lax.map": jax.jit(
              lambda x, k: lax.map(lambda xi: grad(xi, k), jnp.stack([x[:half], x[half:]]))),
      }
      times = {setting: median_seconds(fn, x, kernels) for setting, fn in settings.items()}
    top = top or times["top of the program"]
    print(
        f"{name}: " +
        ", ".join(f"{setting} {1000 * t:.0f} ms ({t / top:.1f}x)" for setting, t in times.items()),
        flush=True)


if __name__ == "__main__":
  main()
