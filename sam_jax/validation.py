"""The values a config may take: every field with a meaningful range or a set of choices.

`check(config)` runs before TensorFlow or any data load (the training binary answers a
bad value in about a second, most of it importing JAX) and again at the start of
`loop.train_and_evaluate`, for library users. The SAM variants' own fields and options
are their registry entries' (`family.registry`). Each bad value is one `UsageError`
line naming the field, its value and what it may be. What depends on the machine or the
data (devices, the batch's layout, the dataset on disk, a checkpoint) is checked where
that is known (`run_setup.set_up`).
"""

import math
from collections.abc import Callable
from typing import Any

import ml_collections

from sam_jax.data import datasets, policies
from sam_jax.errors import UsageError
from sam_jax.family import registry

CHOICES = {
    "dataset": tuple(datasets.DATASETS),
    "dtype": ("auto", "float32", "bfloat16"),
    "replica_mapping": ("auto", "loop", "scan", "vmap"),  # "auto" and replicas.MAPPINGS
    "image_level_augmentations": ("none", "basic", "autoaugment", "aa-only", "randaugment"),
    "batch_level_augmentations": ("none", "cutout", "mixup", "mixcut"),
    "autoaugment_policy": (None, *policies.POLICIES),
    "cutout_mask": ("batch", "example"),
    "optimizer": ("sgd", "rmsprop", "adamw", "lion"),
    "lr_schedule": ("cosine", "linear", "exponential", "constant"),
    "weight_decay_type": (None, "l2", "decoupled"),
    "nonfinite": ("stop", "skip"),
    "resize_method": ("bicubic", "bicubic_tf1"),
    "normalization": datasets.NORMALIZATIONS,
    "classifier": (None, "token", "gap"),
    "loss": ("softmax", "sigmoid"),  # losses.LOSSES (which imports jax)
    "sam.perturbation_mask": ("all", "norm"),  # family.chains.MASKS
}


def _positive(value) -> bool:
  return value > 0


def _at_least_zero(value) -> bool:
  return value >= 0


def _unset_or_positive(value) -> bool:
  return value is None or value > 0


def _fraction(value) -> bool:
  return 0 <= value <= 1


def _below_one(value) -> bool:
  return 0 <= value < 1


# field: (test, what the value must be)
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "image_size": (_unset_or_positive, "a positive number of pixels, or unset"),
    "num_epochs": (_positive, "a positive number of epochs"),
    "num_train_steps": (_unset_or_positive, "a positive number of steps, or unset"),
    "batch_size": (_positive, "a positive number of examples"),
    "cutout_length": (_at_least_zero, "a side in pixels, >= 0"),
    "mixup_alpha": (_positive, "positive (the Beta distribution's parameter)"),
    "randaug_num_layers": (_at_least_zero, "a number of ops, >= 0"),
    "randaug_magnitude": (_at_least_zero, ">= 0 (the ImageNet recipes use 9 to 28)"),
    "label_noise": (_fraction, "a fraction in [0, 1]"),
    "data_shards": (_unset_or_positive, "a positive number of shards, or unset"),
    "shuffle_buffer": (_unset_or_positive, "a positive number of examples, or unset (a "
                       "permutation every epoch)"),
    "learning_rate": (_positive, "positive"),
    "warmup_epochs": (_at_least_zero, "a number of epochs, >= 0"),
    "warmup_steps": (lambda s: s is None or s >= 0, "a number of steps >= 0, or unset"),
    "dropout_rate": (lambda r: r is None or 0 <= r < 1, "in [0, 1), or unset"),
    "momentum": (_below_one, "in [0, 1) (0: none)"),
    "linear_end": (_fraction, "a fraction of learning_rate in [0, 1]"),
    "adam_beta1": (_below_one, "in [0, 1)"),
    "adam_beta2": (_below_one, "in [0, 1)"),
    "adam_eps": (_positive, "positive"),
    "lion_beta1": (_below_one, "in [0, 1)"),
    "lion_beta2": (_below_one, "in [0, 1)"),
    "weight_decay": (_at_least_zero, ">= 0"),
    "gradient_clipping": (_at_least_zero, "a global norm, >= 0 (0: off)"),
    "label_smoothing": (_below_one, "in [0, 1)"),
    "ema_decay": (_below_one, "in [0, 1) (0: no EMA)"),
    "ema_warmup_steps": (_at_least_zero, "a number of steps, >= 0"),
    "sam.rho": (_at_least_zero, "a radius >= 0 (0: the base optimizer; the paper's is 0.05)"),
    "sam.m": (_unset_or_positive, "a positive number of examples per replica, or unset"),
    "sam.sync_group_size": (_unset_or_positive, "a positive number of replicas, or unset"),
    "sam.eta": (_at_least_zero, ">= 0 (ASAM's offset)"),
    "sam.p": (lambda p: 1 <= p <= math.inf, "a norm in [1, inf]: 2 is the paper's"),
    "sam.every": (_positive, "a positive number of steps (1: SAM at every step)"),
    "sam.probability": (lambda p: 0 < p <= 1, "a probability in (0, 1]"),
    "sam.late_phase": (lambda f: 0 < f <= 1, "a fraction of the run in (0, 1] (1: SAM)"),
    "init_seed": (lambda seed: seed is None or seed >= 0, "a seed >= 0, or unset (seed's)"),
    "log_every_steps": (_positive, "a positive number of steps"),
    "profile_steps": (_at_least_zero, "a number of steps, >= 0 (0: no profile)"),
    "evaluate_every": (_positive, "a positive number of epochs"),
    "eval_every_steps": (_at_least_zero, "a number of steps, >= 0 (0: every evaluate_every "
                         "epochs)"),
    "save_progress_seconds": (_at_least_zero, "a number of seconds, >= 0"),
    "keep_checkpoints": (_positive, "a positive number of checkpoints"),
    "additional_checkpoints_at_epochs":
        (lambda epochs: all(e > 0 for e in epochs), "a list of positive epochs"),
}


def get(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field such as `sam.rho`."""
  for name in field.split("."):
    config = config[name]
  return config


def check(config: ml_collections.ConfigDict) -> None:
  """Raises a one-line UsageError for the first value out of its range or choices."""
  for field, choices in CHOICES.items():
    if (value := get(config, field)) not in choices:
      known = ", ".join(str(choice) for choice in choices if choice is not None)
      raise UsageError(f"Unknown {field} '{value}': choose one of {known}"
                       f"{' (or leave it unset)' if None in choices else ''}.")
  for field, (test, what) in (RANGES | registry.field_ranges()).items():  # with the variants
    if not test(value := get(config, field)):
      raise UsageError(f"--config.{field}={value} is out of range: {field} must be {what}.")
  if not config.num_train_steps and config.warmup_epochs >= config.num_epochs:
    raise UsageError(f"--config.warmup_epochs={config.warmup_epochs} leaves nothing of the "
                     f"{config.num_epochs} epochs: use fewer warmup epochs or more epochs.")
  registry.check(config)  # the variant (a known one) and its options
  # pylint: disable-next=import-outside-toplevel  (Flax: only when the rest is valid)
  from sam_jax.models import get_model
  get_model(config.model_name, num_classes=1)  # an unknown name: its own one line
  _check_model_options(config)


def _check_model_options(config: ml_collections.ConfigDict) -> None:
  """The transformer-only model fields are refused on the other models."""
  transformer = config.model_name.startswith(("ViT-", "Mixer-"))
  if config.classifier is not None and not config.model_name.startswith("ViT-"):
    raise UsageError(f"--config.classifier applies to ViT models, not {config.model_name}: "
                     "leave it unset.")
  if config.head_bias_init and not transformer:
    raise UsageError(f"--config.head_bias_init applies to ViT and Mixer models, not "
                     f"{config.model_name}: leave it at 0.")
