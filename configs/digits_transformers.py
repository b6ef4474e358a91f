"""SAM on a tiny Vision Transformer and MLP-Mixer with AdamW, on the offline UCI digits: at
small scale, the question of Chen, Hsieh and Gong (ICLR 2022, "When Vision Transformers
Outperform ResNets without Pretraining or Strong Data Augmentations"), whose SAM raised
ImageNet top-1 from scratch from 74.6 to 79.9 for ViT-B/16 and from 66.4 to 77.4 for
Mixer-B/16 (their Table 2), more than for ResNets.

`ViT-mini_2` (hidden 32, 2 blocks of 2 heads, MLP 64) or `Mixer-mini_2` (hidden 32, 2
blocks, token MLP 16, channel MLP 64) on 2x2 patches of the 8x8 digits, 60 epochs of batch
128, AdamW (lr 0.01, 5 warmup epochs then cosine, decoupled weight decay 0.05, gradient
clipping 1), clean labels or 40% symmetric label noise, evaluated on the 360 clean
held-out digits. Pick the cell after the colon, NOISE_PERCENT,OPTIMIZER,MODEL:

    python -m sam_jax.train --config=configs/digits_transformers.py:40,sam,vit \\
        --workdir=workdirs/digits_transformers/40_sam_vit --config.seed=1

OPTIMIZER is adamw (rho 0), sam (rho 0.1, m = 16: 8 replicas per batch, as the ResNet
study) or gsam (rho from 0.2 down to 0.1 with the learning rate, alpha 0.01, as the
ResNet study's GSAM row). `scripts/compare_transformers.py` runs every cell over three
seeds and analyses each final model (Hessian lambda_max).
"""

from configs import cells, default

NOISE = ("0", "40")
OPTIMIZERS = ("adamw", "sam", "gsam")
MODELS = {"vit": "ViT-mini_2", "mixer": "Mixer-mini_2"}


def get_config(arg: str = "0,sam,vit"):
  cell = cells.parse(arg, noise_percent=NOISE, optimizer=OPTIMIZERS, model=tuple(MODELS))
  config = default.get_config()
  config.dataset = "digits"
  config.model_name = MODELS[cell.model]
  config.num_epochs = 60
  config.batch_size = 128
  config.optimizer = "adamw"
  config.learning_rate = 0.01
  config.warmup_epochs = 5.0
  config.weight_decay = 0.05  # decoupled (AdamW's)
  config.gradient_clipping = 1.0
  config.label_noise = int(cell.noise_percent) / 100
  config.label_noise_seed = config.get_ref("seed")  # follows --config.seed
  config.sam.m = 16
  config.sam.rho = 0.0 if cell.optimizer == "adamw" else 0.1
  if cell.optimizer == "gsam":
    config.sam.update(variant="gsam", rho=0.2, gsam_rho_min=0.1, gsam_alpha=0.01)
  config.log_every_steps = 110
  config.evaluate_every = 60
  config.keep_checkpoints = 1
  return config
