"""ViT and MLP-Mixer trained from scratch on ImageNet with AdamW, SAM or GSAM: the recipe of
Zhuang et al. (ICLR 2022, "Surrogate Gap Minimization Improves Sharpness-Aware Training"),
Table 4, which follows Chen, Hsieh and Gong (ICLR 2022, "When Vision Transformers
Outperform ResNets without Pretraining or Strong Data Augmentations"), and big_vision's
GSAM config (configs/proj/gsam/vit_i1k_gsam_no_aug.py). Pick the cell after the colon,
MODEL,OPTIMIZER[,RHO]:

    python -m sam_jax.train --config=configs/transformers_imagenet.py:ViT-B_32,gsam \\
        --workdir=workdirs/imagenet/vit_b32_gsam --config.data_dir=$TFDS_DATA_DIR

Every cell: batch 4096, 300 epochs, AdamW (beta 0.9, 0.999, eps 1e-8) with decoupled
weight decay 0.3 (in optax.adamw's convention, lr_t * 0.3 * w per step; big_vision writes
it as wd 0.001 ~ 0.3 * lr, optax.py:133) on the kernels only, peak lr 3e-3 after 10,000
warmup steps, then linear decay to 3e-5 (linear_end 0.01), gradient clipping 1.0 (after
the cross-replica mean), no dropout, sigmoid cross-entropy with the head's bias at -10,
inputs in [-1, 1], Inception crop and flip, no RandAugment or mixup, float32.

OPTIMIZER: adamw (rho 0); gsam with the model's rho_max, rho_min and alpha of GSAM's
Table 4 below, rho following the learning rate (`family/stronger.py:rho_following`, as
big_vision's gsam.py); sam needs its rho as RHO (`ViT-B_16,sam,0.2`): Chen et al. tuned it
per model in their appendix, which could not be read when this config was written, and
GSAM's Table 4 gives only GSAM's, so this file does not guess it.

GSAM Table 1, ImageNet top-1 (%) of AdamW / SAM / GSAM; Table 4, GSAM's rho_max / rho_min /
alpha:

    MODEL        AdamW  SAM   GSAM    rho_max rho_min alpha
    ViT-S_32     68.4   70.5  73.8    0.6     0.0     0.4
    ViT-S_16     74.4   78.1  79.5    0.6     0.0     1.0
    ViT-B_32     71.4   73.6  76.8    0.6     0.1     0.6
    ViT-B_16     74.6   79.9  81.0    0.6     0.2     0.4
    Mixer-S_32   63.9   66.7  68.6    0.5     0.0     0.2
    Mixer-S_16   68.8   72.9  75.0    0.5     0.0     0.6
    Mixer-S_8    70.2   75.9  76.8    0.5     0.1     0.1
    Mixer-B_32   62.5   72.4  73.6    0.7     0.2     0.05
    Mixer-B_16   66.4   77.4  77.8    0.5     0.2     0.01

(Chen et al.'s Table 2 has the same AdamW and SAM figures for ViT-B/16, 74.6 and 79.9,
and Mixer-B/16, 66.4 and 77.4.) The ViT's head reads the mean of the tokens (big_vision's
GSAM config: pool_type "gap", no representation layer); `--config.classifier=token` gives
the class token of the published ViT-SAM checkpoints instead.

m: each replica perturbs with its own sub-batch (big_vision's GSAM step runs inside pmap,
trainers/proj/gsam/train.py:189-211). Neither paper gives the number of TPU cores; this
config assumes 32, as the SAM paper's ImageNet runs, so m = 128.

What differs from big_vision, on purpose or for want of an option: this pipeline's
Inception crop covers 8%..100% of the image (big_vision 5%..100%) and is resized bicubic
(big_vision bilinear); evaluation crops the central 224/256 and resizes (big_vision
resizes the short side to 256 and crops 224); training uses all of train (big_vision
train[:99%], keeping 1% as minival).
"""

from configs import cells, default
from sam_jax.errors import UsageError

# GSAM Table 4: rho_max, rho_min, alpha.
GSAM = {
    "ViT-S_32": (0.6, 0.0, 0.4),
    "ViT-S_16": (0.6, 0.0, 1.0),
    "ViT-B_32": (0.6, 0.1, 0.6),
    "ViT-B_16": (0.6, 0.2, 0.4),
    "Mixer-S_32": (0.5, 0.0, 0.2),
    "Mixer-S_16": (0.5, 0.0, 0.6),
    "Mixer-S_8": (0.5, 0.1, 0.1),
    "Mixer-B_32": (0.7, 0.2, 0.05),
    "Mixer-B_16": (0.5, 0.2, 0.01),
}
OPTIMIZERS = ("adamw", "sam", "gsam")


def get_config(arg: str = "ViT-B_32,gsam"):
  cell = cells.parse(arg, model=tuple(GSAM), optimizer=OPTIMIZERS, rho=0.0)
  config = default.get_config()
  config.dataset = "imagenet"
  config.model_name = cell.model
  if cell.model.startswith("ViT-"):
    config.classifier = "gap"
  config.head_bias_init = -10.0
  config.loss = "sigmoid"
  config.normalization = "minus_one_to_one"
  config.num_epochs = 300
  config.batch_size = 4096
  config.optimizer = "adamw"
  config.learning_rate = 3e-3
  config.lr_schedule = "linear"
  config.linear_end = 0.01
  config.warmup_steps = 10_000
  config.weight_decay = 0.3
  config.weight_decay_type = "decoupled"
  config.weight_decay_kernels_only = True
  config.gradient_clipping = 1.0
  config.sam.m = 128  # 4096 over an assumed 32 cores (see above)
  config.sam.rho = 0.0
  if cell.optimizer == "sam":
    if not cell.rho:
      raise UsageError(
          f"The sam cell needs its rho, '{cell.model},sam,RHO': Chen et al.'s per-model value "
          "is not in this config (see its docstring).")
    config.sam.rho = cell.rho
  elif cell.optimizer == "gsam":
    rho_max, rho_min, alpha = GSAM[cell.model]
    config.sam.update(variant="gsam", rho=rho_max, gsam_rho_min=rho_min, gsam_alpha=alpha)
    if cell.rho:
      raise UsageError("The gsam cell takes Table 4's rho: drop RHO, or set "
                       "--config.sam.rho and --config.sam.gsam_rho_min.")
  config.compute_top_5_error_rate = True
  config.log_every_steps = 100
  config.save_progress_seconds = 1800
  return config
