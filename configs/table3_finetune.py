"""Paper Table 3: finetuning EfficientNet-B7 and EfficientNet-L2-475 with and without SAM.

Foret et al. (2021), Sec. 3.2 and Appendix C.2. Convert the published checkpoint first
(checkpoints/README.md: EfficientNet-B7 trained with RandAugment, 84.7% on ImageNet;
NoisyStudent EfficientNet-L2-475, 88.2%) into checkpoints/efficientnet-b7 or
checkpoints/efficientnet-l2-475, then pick the cell after the colon, MODEL,DATASET,OPTIMIZER:

    python -m sam_jax.train --config=configs/table3_finetune.py:b7,cifar100,sam \\
        --workdir=workdirs/table3/b7_cifar100_sam

Recipe: the checkpoint's weights except the classifier, which is freshly initialised
(ImageNet keeps it); frozen BatchNorm statistics; SGD, momentum 0.9, weight decay 1e-5,
cosine decay, gradient clipping 1.0, label smoothing 0.1; B7: batch 1024, lr 0.016, 5,000
steps; L2: batch 512, lr 0.008, 10,000 steps; ImageNet: 10 epochs at lr 0.1 and rho 0.05;
elsewhere rho 0.1 (Table 10 gives every B7 cell at rho 0.05 too: --config.sam.rho=0.05).
Inputs are resized to the model's resolution (600 for B7, 475 for L2). CIFAR uses the
AutoAugment recipe of the CIFAR tables (policy, crop and flip, cutout); the other datasets
ImageNet's training preprocessing (Inception crop and flip), no augmentation beyond it.

Paper top-1 test error (%), mean and 95% interval of 5 runs ("SGD": finetuning without SAM):

    MODEL,DATASET              SAM          SGD
    b7,cifar10                 0.88±0.02    0.95±0.03
    b7,cifar100                7.44±0.06    7.68±0.06
    b7,oxford_flowers102       0.63±0.02    1.16±0.05
    b7,oxford_iiit_pet         3.97±0.04    4.24±0.09
    b7,cars196                 5.18±0.02    5.94±0.06
    b7,food101                 7.02±0.02    7.17±0.03
    b7,imagenet                15.14±0.03   15.3
    l2,cifar10                 0.30±0.01    0.34±0.02
    l2,cifar100                3.92±0.06    4.07±0.08
    l2,oxford_flowers102       0.35±0.01    0.40±0.02
    l2,oxford_iiit_pet         2.90±0.04    3.08±0.04
    l2,cars196                 4.04±0.03    4.93±0.04
    l2,food101                 3.82±0.01    3.97±0.03
    l2,imagenet                11.39±0.02   11.8

(ImageNet's SGD numbers come without an interval in the paper.) The `caltech_birds2011`
cells (CUB-200-2011) have no paper number: the paper's bird dataset is Birdsnap (B7
13.64/14.30, L2 9.93/10.31), which TFDS does not carry. FGVC Aircraft is not in TFDS
either.
"""

import ml_collections

from configs import cells, default

MODELS = {"b7": "efficientnet-b7", "l2": "efficientnet-l2-475"}
DATASETS = ("cifar10", "cifar100", "oxford_flowers102", "oxford_iiit_pet", "cars196", "food101",
            "caltech_birds2011", "imagenet")


def get_config(arg: str = "b7,cifar10,sam") -> ml_collections.ConfigDict:
  cell = cells.parse(arg, model=tuple(MODELS), dataset=DATASETS, optimizer=cells.OPTIMIZERS)
  config = default.get_config()
  config.model_name = MODELS[cell.model]
  config.dataset = cell.dataset
  config.init_from = f"checkpoints/{MODELS[cell.model]}"
  config.freeze_batch_norm = True
  config.batch_size = 1024 if cell.model == "b7" else 512
  if cell.dataset == "imagenet":
    config.num_epochs = 10
    config.learning_rate = 0.1
    rho = 0.05
  else:
    config.num_train_steps = 5000 if cell.model == "b7" else 10000
    config.learning_rate = 0.016 if cell.model == "b7" else 0.008
    rho = 0.1
  config.sam.rho = cells.sam_rho(cell.optimizer, rho)
  config.weight_decay = 1e-5
  config.momentum = 0.9
  config.lr_schedule = "cosine"
  config.gradient_clipping = 1.0
  config.label_smoothing = 0.1
  # The original synchronised every EfficientNet BatchNorm across replicas
  # (sam_jax/efficientnet/efficientnet.py:310-316); frozen here, so it changes nothing yet.
  config.sync_batch_norm = True
  # New dropout and stochastic-depth masks in the SAM pass, as the original's stateful
  # Bernoulli drew them (sam_jax/train.py:76-82; models/layers.py:train_rngs).
  config.sam.redraw_masks = True
  if cell.dataset.startswith("cifar"):
    config.image_level_augmentations, config.batch_level_augmentations = "autoaugment", "cutout"
    config.autoaugment_faithful = True  # the original's AutoAugment (data/policies.py)
  else:
    config.image_level_augmentations, config.batch_level_augmentations = "basic", "none"
  config.eval_every_steps = 0 if cell.dataset == "imagenet" else 1000  # 0: every epoch
  config.save_progress_seconds = 600
  return config
