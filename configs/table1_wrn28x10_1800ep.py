"""Paper Table 1, rows "WRN-28-10 (1800 epochs)", Basic and Cutout, on CIFAR-10/100.

WideResnet28x10 for 1800 epochs; Table 6: lr 0.05, weight decay 1e-3 (as 0.5 wd ||w||^2
in the loss), rho 0.05 on CIFAR-10 and 0.1 on CIFAR-100; the rest as in
`configs/paper.py` (batch 256, m = 32). Pick the cell after the colon,
DATASET,AUGMENTATION,OPTIMIZER:

    python -m sam_jax.train --config=configs/table1_wrn28x10_1800ep.py:cifar100,cutout,sam \\
        --workdir=workdirs/wrn28x10_1800ep/cifar100_cutout_sam

Paper test error (%), mean and 95% interval of 5 runs:

    DATASET,AUGMENTATION    SAM        SGD
    cifar10,basic           2.4±0.1    3.5±0.1
    cifar10,cutout          2.1±0.1    2.7±0.1
    cifar10,aa              1.6±0.1    2.2±<0.1
    cifar100,basic          16.3±0.2   19.1±0.1
    cifar100,cutout         14.0±0.1   17.4±0.1
    cifar100,aa             12.8±0.2   16.1±0.2

AA is the AutoAugment CIFAR policy, then basic augmentation, then cutout (the AutoAugment
paper's CIFAR recipe; the original's --image_level_augmentations=autoaugment
--batch_level_augmentations=cutout).
"""

from configs import paper


def get_config(cell: str = "cifar10,basic,sam"):
  return paper.cell_config(cell, model_name="WideResnet28x10", num_epochs=1800, learning_rate=0.05,
                           weight_decay=1e-3, rho={
                               "cifar10": 0.05,
                               "cifar100": 0.1
                           })
