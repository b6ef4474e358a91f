"""The original google-research/sam flags and what each means in our config.

The training binary defines one absl flag per entry of `ORIGINAL_FLAGS` (unset by
default) and passes the values a user set to `apply`, which writes them into the config
after the config file and its `--config.FIELD` overrides: `--dataset cifar100
--sam_rho 0.1` still works, and lands in `config.dataset` and `config.sam.rho`. Without
--config, that config file is `configs/original.py`, the official binary's defaults, so
the flags a user leaves unset take their official defaults (`--sam_rho` 0: SGD).
"""

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any

import ml_collections

from sam_jax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class OriginalFlag:
  field: str | None  # the config field it sets ("sam.rho"); None: handled in `apply`
  type: type  # str, int, float, bool or list (of ints)
  help: str
  meaning: Callable[[Any], Any] | None = None  # the field's value for the flag's; None: same


ORIGINAL_FLAGS = {
    "dataset": OriginalFlag(
        "dataset", str, "cifar10, cifar100, fashion_mnist, svhn, imagenet, "
        "or a finetuning dataset (oxford_flowers102, ...; see "
        "configs/default.py)."),
    "model_name": OriginalFlag("model_name", str, "Model name, e.g. WideResnet28x10."),
    "num_epochs": OriginalFlag("num_epochs", int, "Number of training epochs."),
    "batch_size": OriginalFlag("batch_size", int, "Global batch size."),
    "output_dir": OriginalFlag(None, str, "Same as --workdir."),
    "image_level_augmentations": OriginalFlag("image_level_augmentations", str,
                                              "none, basic, autoaugment or aa-only."),
    "batch_level_augmentations": OriginalFlag("batch_level_augmentations", str,
                                              "none, cutout, mixup or mixcut."),
    "learning_rate": OriginalFlag("learning_rate", float, "Base learning rate."),
    "use_learning_rate_schedule": OriginalFlag("use_learning_rate_schedule", bool,
                                               "Use lr_schedule (else a constant learning rate)."),
    "lr_schedule": OriginalFlag("lr_schedule", str, "cosine or exponential."),
    "weight_decay": OriginalFlag("weight_decay", float,
                                 "L2 weight decay (0.5 wd ||w||^2 in the loss)."),
    "gradient_clipping": OriginalFlag("gradient_clipping", float,
                                      "Clip the gradient's global norm."),
    "use_rmsprop": OriginalFlag("optimizer", bool, "RMSProp instead of SGD (EfficientNet recipe).",
                                lambda on: "rmsprop" if on else "sgd"),
    "label_smoothing": OriginalFlag("label_smoothing", float, "Label smoothing."),
    "ema_decay": OriginalFlag("ema_decay", float,
                              "EMA decay of the evaluated parameters (0 = off)."),
    "no_weight_decay_on_bn": OriginalFlag("no_weight_decay_on_bn", bool,
                                          "No weight decay on parameters with ndim <= 1."),
    "run_seed": OriginalFlag("seed", int, "Seed of initialisation, data order and randomness."),
    "sam_rho": OriginalFlag("sam.rho", float, "SAM neighbourhood size (0 = SGD)."),
    "sync_perturbations": OriginalFlag(
        "sam.sync_perturbations", bool,
        "One perturbation from the gradient averaged over all replicas."),
    "inner_group_size": OriginalFlag(
        "sam.sync_group_size", int,
        "With --sync_perturbations, replicas per shared perturbation (default: all)."),
    "save_progress_seconds": OriginalFlag("save_progress_seconds", int,
                                          "Seconds between checkpoints."),
    "additional_checkpoints_at_epochs": OriginalFlag("additional_checkpoints_at_epochs", list,
                                                     "Epochs whose checkpoints are kept forever."),
    "also_eval_on_training_set": OriginalFlag("also_eval_on_training_set", bool,
                                              "Also evaluate on the (unaugmented) training set."),
    "compute_top_5_error_rate": OriginalFlag("compute_top_5_error_rate", bool,
                                             "Also report top-5 error."),
    "evaluate_every": OriginalFlag("evaluate_every", int, "Evaluate every N epochs."),
    "use_test_set": OriginalFlag(
        "use_test_set", bool, "Evaluate on the test set (else the last 10% of train; "
        "SVHN: train[65929:])."),
    "cutout_length": OriginalFlag("cutout_length", int, "Side of the cutout square."),
    "randaug_num_layers": OriginalFlag("randaug_num_layers", int, "RandAugment layers (ImageNet)."),
    "randaug_magnitude": OriginalFlag("randaug_magnitude", int,
                                      "RandAugment magnitude (ImageNet)."),
    "imagenet_mixup_alpha": OriginalFlag("mixup_alpha", float, "If > 0, mixup with this alpha."),
    "use_additional_skip_connections": OriginalFlag(
        "use_additional_skip_connections", bool,
        "WideResNet: a shortcut around each group too (the AutoAugment model)."),
    "from_pretrained_checkpoint": OriginalFlag(
        None, bool, "Finetune from --efficientnet_checkpoint_path with frozen BatchNorm "
        "statistics."),
    "efficientnet_checkpoint_path": OriginalFlag(
        None, str, "The EfficientNet checkpoint to finetune (any format of "
        "checkpoints/README.md)."),
}


def apply(config: ml_collections.ConfigDict, values: Mapping[str, Any],
          overridden: Collection[str] = ()) -> None:
  """Writes the original flags that were set (`values`: name -> value, None if unset).

  `overridden`: the fields a `--config.FIELD` flag set; an original flag that sets one of
  them to another value is refused rather than silently preferred.

  Raises:
    UsageError: for original flags that do not make sense together, or that contradict
      a --config.FIELD flag.
  """
  with config.unlocked():
    for name, flag in ORIGINAL_FLAGS.items():
      value = values.get(name)
      if value is None or flag.field is None:
        continue
      if flag.type is list:
        value = tuple(int(v) for v in value)
      if flag.meaning:
        value = flag.meaning(value)
      node, _, leaf = flag.field.rpartition(".")
      parent = config[node] if node else config
      if flag.field in overridden and parent[leaf] != value:
        raise UsageError(f"--{name}={value} and --config.{flag.field}={parent[leaf]} set "
                         f"{flag.field} differently: give one of them.")
      parent[leaf] = value
    _original_meanings(config, values)


def _original_meanings(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Where an original flag meant something else than our field of the same name."""
  if values.get("imagenet_mixup_alpha"):
    config.batch_level_augmentations = "mixup"
  if values.get("image_level_augmentations") in ("autoaugment", "aa-only"):
    config.autoaugment_faithful = True  # the original's op magnitudes and quirks
    if config.dataset == "imagenet":  # the original applied RandAugment to ImageNet
      config.image_level_augmentations = "randaugment"
  if (values.get("model_name") or "").startswith("efficientnet"):
    config.sync_batch_norm = True  # the original's EfficientNet BatchNorm: axis_name='batch'
  if values.get("from_pretrained_checkpoint"):  # the original also froze BatchNorm then
    if not values.get("efficientnet_checkpoint_path"):
      raise UsageError("--from_pretrained_checkpoint needs --efficientnet_checkpoint_path=PATH "
                       "(see checkpoints/README.md).")
    config.init_from = values["efficientnet_checkpoint_path"]
    config.freeze_batch_norm = True
