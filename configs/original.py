"""The official google-research/sam binary's defaults: what its flags start from.

    python -m sam_jax.train --dataset cifar10 --model_name WideResnet28x10 --output_dir DIR

trains what `python3 -m sam.sam_jax.train` trained with the same flags: the binary loads
this file instead of `configs/default.py` when original flags are given without
--config (with --config=FILE, they override FILE's fields instead). Every original flag
left unset takes its official default (the `DEFINE_*` lines of sam_jax/train.py,
training_utils/flax_training.py, datasets/, models/wide_resnet.py and
imagenet_models/load_model.py at HEAD dae9904); in particular `--sam_rho` defaults to 0
(flax_training.py:81): without it the command trains SGD. `official_code` holds what that
code did beyond its flags, which the paper configs share.
"""

import ml_collections

from configs import default


def official_code(config: ml_collections.ConfigDict) -> None:
  """Sets the official code's choices where this project's defaults differ (in place)."""
  # float32 activations: no dtype is passed to any flax.nn layer (imagenet_models/resnet.py:77
  # sets jnp.float32), at XLA's default matmul precision.
  config.dtype = "float32"
  # New Bernoulli masks (ShakeDrop, dropout, stochastic depth) in each SAM pass: train.py:77-84
  # replaces jax.random.bernoulli by the stateful lax.rng_uniform for every run.
  config.sam.redraw_masks = True
  # The AutoAugment and RandAugment ops as autoaugment/autoaugment.py wrote them.
  config.autoaugment_faithful = True
  # tf.compat.v1.image.resize_bicubic (dataset_source.py:67, dataset_source_imagenet.py:107).
  config.resize_method = "bicubic_tf1"
  # The training split in file order through a 50,000-example buffer (dataset_source.py:116).
  config.shuffle_buffer = 50_000


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  official_code(config)
  config.sam.rho = 0.0  # flax_training.py:81: SGD unless --sam_rho is given
  # The initial weights come from PRNGKey(0) whatever --run_seed (models/load_model.py:116,
  # imagenet_models/load_model.py:131); --run_seed seeds the rest.
  config.init_seed = 0
  return config
