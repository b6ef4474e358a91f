"""The converter binary: a published EfficientNet checkpoint in, an Orbax folder out.

    python -m sam_jax.pretrained --from=PATH --model=efficientnet-b7 --to=DIR

Then finetune with `--config.init_from=DIR` (see checkpoints/README.md).
"""

import os
import sys

import jax
import numpy as np
from absl import app, flags

from sam_jax.errors import UsageError
from sam_jax.pretrained import FORMATS, convert_to_orbax

_FROM = flags.DEFINE_string("from", None, "The published checkpoint (see checkpoints/README.md).",
                            required=True)
_TO = flags.DEFINE_string("to", None, "New folder for the converted Orbax checkpoint.",
                          required=True)
_MODEL = flags.DEFINE_string("model", None, "Our model name, e.g. efficientnet-b7.",
                             required=True)
_FORMAT = flags.DEFINE_enum("format", None, list(FORMATS), "Checkpoint format (default: "
                            "detected).")
_EMA = flags.DEFINE_bool("ema", True, "TF checkpoints: the ExponentialMovingAverage copies.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    variables = convert_to_orbax(_FROM.value, _MODEL.value, _TO.value, fmt=_FORMAT.value,
                                 use_ema=_EMA.value)
  except UsageError as e:
    print(f"sam_jax.pretrained: error: {e}", file=sys.stderr)
    sys.exit(2)
  count = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  print(f"Wrote {_MODEL.value} ({count:,} parameters, "
        f"{variables['params']['head_dense']['bias'].shape[0]} classes) to "
        f"{os.path.abspath(_TO.value)}; finetune with --config.init_from={_TO.value}")


if __name__ == "__main__":
  app.run(main)
