"""ViT and MLP-Mixer trained from scratch on CIFAR-10/100 with AdamW, SAM or GSAM.

Neither Chen et al. (ICLR 2022) nor GSAM (ICLR 2022) trains these from scratch on CIFAR
(both only finetune there), so there are no paper figures to match: this is this
project's recipe, the ImageNet one (`configs/transformers_imagenet.py`) scaled to 32x32
images and the SAM paper's CIFAR set-up. Pick the cell after the colon,
DATASET,MODEL,OPTIMIZER:

    python -m sam_jax.train --config=configs/transformers_cifar.py:cifar10,vit,sam \\
        --workdir=workdirs/cifar10/vit_sam

MODEL is vit (ViT-S/4: 64 patches of 4x4 and a class token, 21.3M parameters with 10
classes) or mixer (Mixer-S/4: 64 patches, 17.1M). Every cell: 300 epochs of batch 256
with m = 32 (the SAM paper's CIFAR replicas, Sec. 3.1), AdamW (peak lr 1e-3 after 10
warmup epochs, cosine decay, decoupled weight decay 0.05 on the kernels), gradient
clipping 1.0, label smoothing 0.1, the SAM paper's strongest CIFAR augmentation
(AutoAugment then cutout), inputs in [-1, 1], float32. OPTIMIZER: adamw (rho 0); sam
(rho 0.05, the SAM paper's default); gsam (rho from 0.1 at the peak learning rate down to
0.05, alpha 0.1).
"""

from configs import cells, default

MODELS = {"vit": "ViT-S_4", "mixer": "Mixer-S_4"}
OPTIMIZERS = ("adamw", "sam", "gsam")


def get_config(arg: str = "cifar10,vit,sam"):
  cell = cells.parse(arg, dataset=("cifar10", "cifar100"), model=tuple(MODELS),
                     optimizer=OPTIMIZERS)
  config = default.get_config()
  config.dataset = cell.dataset
  config.model_name = MODELS[cell.model]
  config.normalization = "minus_one_to_one"
  config.image_level_augmentations = "autoaugment"
  config.batch_level_augmentations = "cutout"
  config.num_epochs = 300
  config.batch_size = 256
  config.sam.m = 32
  config.optimizer = "adamw"
  config.learning_rate = 1e-3
  config.warmup_epochs = 10.0
  config.weight_decay = 0.05
  config.weight_decay_type = "decoupled"
  config.weight_decay_kernels_only = True
  config.gradient_clipping = 1.0
  config.label_smoothing = 0.1
  config.sam.rho = 0.0 if cell.optimizer == "adamw" else 0.05
  if cell.optimizer == "gsam":
    config.sam.update(variant="gsam", rho=0.1, gsam_rho_min=0.05, gsam_alpha=0.1)
  config.save_progress_seconds = 600
  return config
