"""The converter binary: a published EfficientNet, ViT or Mixer checkpoint in, an Orbax
folder out.

    python -m sam_jax.pretrained --from=PATH --model=efficientnet-b7 --to=DIR
    python -m sam_jax.pretrained --from=ViT-B_16.npz --model=ViT-B_16 --to=DIR

Then finetune with `--config.init_from=DIR` (see checkpoints/README.md).
"""

import os

import jax
import numpy as np
from absl import flags

from sam_jax import console
from sam_jax.errors import UsageError, exit_with_usage_error, run_binary
from sam_jax.pretrained import FORMATS, convert_to_orbax

_FROM = flags.DEFINE_string("from", None, "The published checkpoint (see checkpoints/README.md).")
_TO = flags.DEFINE_string("to", None, "New folder for the converted Orbax checkpoint.")
_MODEL = flags.DEFINE_string("model", None, "Our model name, e.g. efficientnet-b7 or ViT-B_16.")
_FORMAT = flags.DEFINE_enum("format", None, list(FORMATS), "Checkpoint format (default: "
                            "detected).")
_EMA = flags.DEFINE_bool("ema", True, "TF checkpoints: the ExponentialMovingAverage copies.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show every library's INFO lines too (Orbax's).")


def main(argv):
  console.quiet_logs(_VERBOSE.value)  # Orbax's 30 lines of INFO about the folder it writes
  try:
    if len(argv) > 1:
      raise UsageError(f"Unexpected arguments: {' '.join(argv[1:])} (flags take the form "
                       "--name=value).")
    source, model, to = _FROM.value, _MODEL.value, _TO.value
    if not (source and model and to):
      missing = [f"--{flag.name}" for flag in (_FROM, _MODEL, _TO) if not flag.value]
      raise UsageError(f"Say {' and '.join(missing)}: python -m sam_jax.pretrained "
                       "--from=CHECKPOINT --model=efficientnet-b7 --to=NEW_FOLDER.")
    variables = convert_to_orbax(source, model, to, fmt=_FORMAT.value, use_ema=_EMA.value)
  except UsageError as e:
    exit_with_usage_error("sam_jax.pretrained", str(e))
  count = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  head = variables["params"].get("head_dense") or variables["params"]["head"]
  print(f"Wrote {model} ({count:,} parameters, {head['bias'].shape[0]} classes) to "
        f"{os.path.abspath(to)}; finetune with --config.init_from={to}")


if __name__ == "__main__":
  run_binary("sam_jax.pretrained", main)
