"""Published EfficientNet, ViT and Mixer checkpoints into this codebase's models, and a
converter (for EfficientNets).

Four formats are read into `{"params", "batch_stats"}` of `models.efficientnet`:

  tf     TensorFlow checkpoints of the official release (tensorflow/tpu, NoisyStudent
         included): `efficientnet-b0/blocks_3/depthwise_conv2d/depthwise_kernel`, ...,
         each with an `/ExponentialMovingAverage` copy, which is taken by default (where
         it exists, as TF's evaluation does); `use_ema=False` takes the raw variables.
  flax   the msgpack files released with the original SAM code (flax.nn): a tuple of
         (model, state), trees `Stem_0/...`, `MBConvBlock_{i+1}/...`, `Head_{n+1}/...`.
  keras  keras.applications EfficientNetB0-B7 weight files (`efficientnetb0.h5`, or any
         model saved by `model.save("x.h5")`): layers `stem_conv`, `block2a_dwconv`, ...
  orbax  a folder written by the converter (our own names).

and one into `{"params"}` of `models.vit` and `models.mixer` (`transformers`):

  npz    google-research/vision_transformer's files (ViT-SAM and Mixer-SAM included):
         `Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel`, ...

`names` maps our variable names to each format's, `readers` opens the files, `convert`
checks and loads. The converter binary:

    python -m sam_jax.pretrained --from=noisy_student_efficientnet-l2_475 \\
        --model=efficientnet-l2-475 --to=checkpoints/efficientnet-l2-475
"""

from sam_jax.pretrained.convert import (check_family, convert, convert_to_orbax, efficientnet_model,
                                        init_shapes, load)
from sam_jax.pretrained.names import source_name
from sam_jax.pretrained.readers import FORMATS, CheckpointError, detect_format

__all__ = [
    "FORMATS", "CheckpointError", "check_family", "convert", "convert_to_orbax", "detect_format",
    "efficientnet_model", "init_shapes", "load", "source_name"
]
