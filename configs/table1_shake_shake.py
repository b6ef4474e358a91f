"""Paper Table 1, rows "Shake-Shake (26 2x96d)", Basic and Cutout, on CIFAR-10/100.

WideResnet28x6_ShakeShake for 1800 epochs (as in the AutoAugment setup the paper
follows; the paper does not restate it); Table 6: lr 0.02, weight decay 1e-3, rho 0.02 on
CIFAR-10 and 0.05 on CIFAR-100; the rest as in `configs/paper.py` (batch 256, m = 32).
The ascent gradient uses the same shake gates forward and backward, as the original
(`--config.sam.true_gradient_ascent`). Pick the cell after the colon,
DATASET,AUGMENTATION,OPTIMIZER:

    python -m sam_jax.train --config=configs/table1_shake_shake.py:cifar10,cutout,sam \\
        --workdir=workdirs/shake_shake/cifar10_cutout_sam

Paper test error (%), mean and 95% interval of 5 runs:

    DATASET,AUGMENTATION    SAM        SGD
    cifar10,basic           2.3±<0.1   2.7±0.1
    cifar10,cutout          2.0±<0.1   2.3±0.1
    cifar10,aa              1.6±<0.1   1.9±0.1
    cifar100,basic          15.1±0.1   17.0±0.1
    cifar100,cutout         14.2±0.2   15.7±0.2
    cifar100,aa             12.8±0.1   14.1±0.2

AA is the AutoAugment CIFAR policy, then basic augmentation, then cutout (the AutoAugment
paper's CIFAR recipe; the original's --image_level_augmentations=autoaugment
--batch_level_augmentations=cutout).
"""

from configs import paper


def get_config(cell: str = "cifar10,basic,sam"):
  return paper.cell_config(cell, model_name="WideResnet28x6_ShakeShake", num_epochs=1800,
                           learning_rate=0.02, weight_decay=1e-3, rho={
                               "cifar10": 0.02,
                               "cifar100": 0.05
                           })
