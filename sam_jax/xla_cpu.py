"""XLA:CPU options the project sets, because they make its train steps faster.

jaxlib 0.10's XLA:CPU hands dots, reductions and large convolutions to YNNPACK. For the
convolutions of a ResNet's train step that is the slower choice on x86: WRN-16-4's kernel
gradients run 3-6x slower than in XLA's own (Eigen) convolutions, and its SGD step takes
3.9 s instead of 2.6 s (`scripts/benchmark_step.py`, 2-core CPU, batch 128). Dots and
reductions stay with YNNPACK (BatchNorm's statistics are 10x slower without it).

The binaries (`python -m sam_jax.train`, `python -m sam_jax.analysis`), the scripts that
compute and the tests call `set_defaults()` before JAX starts its CPU backend (the first
array or `jax.devices()`): it adds the options to `XLA_FLAGS` unless that already names
them (yours win). Importing `sam_jax` does not: a library leaves your process alone. In
your own program, call it first to get the same speed. XLA:CPU alone reads the flags.
"""

import os

import jaxlib.version

# YNNPACK for dots and reductions (as by default), not for convolutions.
FLAGS = ("--xla_cpu_experimental_ynn_fusion_type="
         "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",)
# The jaxlib versions that know the flags (XLA aborts on a flag it does not know).
KNOWN_TO = ("0.10.",)


def set_defaults(environ=os.environ) -> None:
  """Adds `FLAGS` to `environ["XLA_FLAGS"]`, except those it sets already."""
  if not jaxlib.version.__version__.startswith(KNOWN_TO):
    return
  current = environ.get("XLA_FLAGS", "")
  missing = [flag for flag in FLAGS if flag.split("=")[0] not in current]
  if missing:
    environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
