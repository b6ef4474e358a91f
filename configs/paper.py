"""What the paper's image-classification configs share: one experiment cell per run.

Foret et al. (2021), Sec. 3.1 and Appendix C.1: CIFAR-10/100, SVHN and Fashion-MNIST are
trained with a global batch of 256 split over 8 GPUs, so each SAM perturbation sees m = 32
examples; SGD with Nesterov momentum 0.9, a per-step cosine schedule, gradient clipping 5,
BatchNorm per replica, and learning rate, weight decay and rho from Tables 6 and 7. "SGD"
is the same run with rho = 0; the paper gives SGD twice the epochs too and reports the
better of the two (Sec. 3.1), so run each sgd cell also with --config.num_epochs=2N.
The paper reports the mean and 95% interval of 5 runs (--config.seed=0..4).

A config file built on this takes its cell after a colon:
`--config=configs/FILE.py:DATASET,AUGMENTATION,OPTIMIZER`.
"""

from collections.abc import Mapping

import ml_collections

from configs import default

# Cell name -> (image_level_augmentations, batch_level_augmentations).
AUGMENTATIONS = {"basic": ("basic", "none"), "cutout": ("basic", "cutout"),
                 "aa": ("autoaugment", "cutout")}
OPTIMIZERS = ("sam", "sgd")


def parse_cell(arg: str, datasets, augmentations) -> tuple[str, str, str]:
  """Splits "DATASET,AUGMENTATION,OPTIMIZER", or raises a ValueError naming the choices."""
  parts = tuple(arg.split(","))
  if (len(parts) != 3 or parts[0] not in datasets or parts[1] not in augmentations
      or parts[2] not in OPTIMIZERS):
    raise ValueError(
        f"Unknown experiment cell '{arg}': give DATASET,AUGMENTATION,OPTIMIZER after the "
        f"config file's colon, with DATASET in {'|'.join(datasets)}, AUGMENTATION in "
        f"{'|'.join(augmentations)} and OPTIMIZER in {'|'.join(OPTIMIZERS)}.")
  return parts


def cell_config(arg: str, *, model_name: str, num_epochs: int,
                learning_rate: float | Mapping[str, float], weight_decay: float,
                rho: Mapping[str, float],
                augmentations: Mapping[str, tuple[str, str]] = AUGMENTATIONS,
                ) -> ml_collections.ConfigDict:
  """The config of one cell; `rho` (and a dict `learning_rate`) map each dataset of the
  table to its value."""
  dataset, augmentation, optimizer = parse_cell(arg, tuple(rho), tuple(augmentations))
  config = default.get_config()
  config.dataset = dataset
  config.model_name = model_name
  config.num_epochs = num_epochs
  config.batch_size = 256
  config.sam.m = 32  # 256 over 8 GPUs; kept on any hardware by virtual replicas
  config.image_level_augmentations, config.batch_level_augmentations = (
      augmentations[augmentation])
  config.learning_rate = (learning_rate[dataset] if isinstance(learning_rate, Mapping)
                          else learning_rate)
  config.weight_decay = weight_decay
  config.sam.rho = rho[dataset] if optimizer == "sam" else 0.0
  config.save_progress_seconds = 600
  return config
