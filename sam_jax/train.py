"""Training binary: a config file (plus overrides or the original SAM flags) in, a run out.

    python -m sam_jax.train --config=configs/digits_demo.py --workdir=workdirs/demo
    python -m sam_jax.train --config=configs/default.py --config.sam.rho=0.1 --workdir=...

The original google-research/sam flags are accepted too and land in the same config:

    python -m sam_jax.train --dataset cifar10 --model_name WideResnet28x10 \\
        --output_dir DIR --image_level_augmentations autoaugment --num_epochs 1800 --sam_rho 0.05
"""

import copy
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "configs", "default.py")


def _fail(reason: str):
  """Ends the run with one line on stderr and exit status 2."""
  print(f"sam_jax.train: error: {reason}", file=sys.stderr)
  sys.exit(2)


def _last_line(error: Exception) -> str:
  """The informative line of a (possibly multi-line, traceback-carrying) error message."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def _unknown_field(error: Exception) -> str:
  field = str(error).strip("\"'")
  return (f"a --config.FIELD override names a field the config does not have: '{field}' "
          "(python -m sam_jax.train --helpfull lists the fields).")


try:  # ml_collections applies --config.FIELD overrides from sys.argv right here
  _CONFIG = config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Experiment config file (configs/*.py, optionally "
      "path.py:ARGUMENT); fields can be overridden with --config.FIELD=VALUE.",
      lock_config=True)
except (AttributeError, KeyError) as e:
  _fail(_unknown_field(e))
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for checkpoints, TensorBoard events and results.json; a run "
    "restarted with the same workdir resumes from its latest checkpoint.")

# The original binary's flags: name -> (config field, type, help). Unset (None) flags
# leave the config file's value alone.
ORIGINAL_FLAGS = {
    "dataset": ("dataset", str, "cifar10, cifar100, fashion_mnist, svhn, imagenet, or a "
                "finetuning dataset (oxford_flowers102, ...; see configs/default.py)."),
    "model_name": ("model_name", str, "Model name, e.g. WideResnet28x10."),
    "num_epochs": ("num_epochs", int, "Number of training epochs."),
    "batch_size": ("batch_size", int, "Global batch size."),
    "output_dir": (None, str, "Same as --workdir."),
    "image_level_augmentations": ("image_level_augmentations", str,
                                  "none, basic, autoaugment or aa-only."),
    "batch_level_augmentations": ("batch_level_augmentations", str,
                                  "none, cutout, mixup or mixcut."),
    "learning_rate": ("learning_rate", float, "Base learning rate."),
    "use_learning_rate_schedule": ("use_learning_rate_schedule", bool,
                                   "Use lr_schedule (else a constant learning rate)."),
    "lr_schedule": ("lr_schedule", str, "cosine or exponential."),
    "weight_decay": ("weight_decay", float, "L2 weight decay (0.5 wd ||w||^2 in the loss)."),
    "gradient_clipping": ("gradient_clipping", float, "Clip the gradient's global norm."),
    "use_rmsprop": ("use_rmsprop", bool, "RMSProp instead of SGD (EfficientNet recipe)."),
    "label_smoothing": ("label_smoothing", float, "Label smoothing."),
    "ema_decay": ("ema_decay", float, "EMA decay of the evaluated parameters (0 = off)."),
    "no_weight_decay_on_bn": ("no_weight_decay_on_bn", bool,
                              "No weight decay on parameters with ndim <= 1."),
    "run_seed": ("seed", int, "Seed of initialisation, data order and randomness."),
    "sam_rho": ("sam.rho", float, "SAM neighbourhood size (0 = SGD)."),
    "sync_perturbations": ("sam.sync_perturbations", bool,
                           "One perturbation from the gradient averaged over all replicas."),
    "inner_group_size": ("sam.m", int, "Examples per perturbation (m); default: a device's batch."),
    "save_progress_seconds": ("save_progress_seconds", int, "Seconds between checkpoints."),
    "additional_checkpoints_at_epochs": ("additional_checkpoints_at_epochs", list,
                                         "Epochs whose checkpoints are kept forever."),
    "also_eval_on_training_set": ("also_eval_on_training_set", bool,
                                  "Also evaluate on the (unaugmented) training set."),
    "compute_top_5_error_rate": ("compute_top_5_error_rate", bool, "Also report top-5 error."),
    "evaluate_every": ("evaluate_every", int, "Evaluate every N epochs."),
    "use_test_set": ("use_test_set", bool, "Evaluate on the test set (else a 10% holdout)."),
    "cutout_length": ("cutout_length", int, "Side of the cutout square."),
    "randaug_num_layers": ("randaug_num_layers", int, "RandAugment layers (ImageNet)."),
    "randaug_magnitude": ("randaug_magnitude", int, "RandAugment magnitude (ImageNet)."),
    "imagenet_mixup_alpha": ("mixup_alpha", float, "If > 0, mixup with this alpha."),
    "use_additional_skip_connections": ("use_additional_skip_connections", bool,
                                        "WideResNet: a shortcut around each group too "
                                        "(the AutoAugment model)."),
    "from_pretrained_checkpoint": (None, bool, "Finetune from --efficientnet_checkpoint_path "
                                   "with frozen BatchNorm statistics."),
    "efficientnet_checkpoint_path": (None, str, "The EfficientNet checkpoint to finetune "
                                     "(any format of checkpoints/README.md)."),
}

_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool, list: flags.DEFINE_list}
for _name, (_field, _type, _help) in ORIGINAL_FLAGS.items():
  _DEFINE[_type](_name, None, f"[original flag] {_help}")


def config_from_flags():
  """The config file with --config.* overrides, then the original flags that were set.

  Raises:
    ValueError: for original flags that do not make sense together.
  """
  config = copy.deepcopy(_CONFIG.value)  # the flag's own value stays as parsed
  with config.unlocked():
    for name, (field, type_, _) in ORIGINAL_FLAGS.items():
      value = flags.FLAGS[name].value
      if value is None or field is None:
        continue
      if type_ is list:
        value = tuple(int(v) for v in value)
      node, _, leaf = field.rpartition(".")
      (config[node] if node else config)[leaf] = value
    _original_meanings(config)
  return config


def _original_meanings(config) -> None:
  """Where an original flag meant something else than our field of the same name."""
  if flags.FLAGS.imagenet_mixup_alpha:
    config.batch_level_augmentations = "mixup"
  if (flags.FLAGS.image_level_augmentations == "autoaugment"
      and config.dataset == "imagenet"):  # the original applied RandAugment to ImageNet
    config.image_level_augmentations = "randaugment"
  if flags.FLAGS.from_pretrained_checkpoint:  # the original also froze BatchNorm then
    if not flags.FLAGS.efficientnet_checkpoint_path:
      raise ValueError("--from_pretrained_checkpoint needs --efficientnet_checkpoint_path=PATH "
                       "(see checkpoints/README.md).")
    config.init_from = flags.FLAGS.efficientnet_checkpoint_path
    config.freeze_batch_norm = True


def workdir_from_flags() -> str:
  workdir = _WORKDIR.value or flags.FLAGS.output_dir
  if not workdir:
    raise ValueError("Say where the run lives: --workdir=DIR (or the original --output_dir).")
  return workdir


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with any error (a config file's included) shown as one line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # from ml_collections' override parsing
    _fail(_unknown_field(e))
  except (flags.Error, OSError) as e:
    _fail(f"{_last_line(e)} (see --helpfull)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    config, workdir = config_from_flags(), workdir_from_flags()
    from sam_jax import trainer  # after flag parsing: JAX and TF start only when needed
    results = trainer.train_and_evaluate(config, workdir)
  except (ValueError, OSError) as e:  # bad input: missing data, bad layout, bad config...
    logging.debug("Full traceback:", exc_info=True)
    _fail(_last_line(e))
  logging.info("Results: %s", results)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
