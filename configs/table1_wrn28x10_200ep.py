"""Paper Table 1, rows "WRN-28-10 (200 epochs)", Basic and Cutout, on CIFAR-10/100.

WideResnet28x10 for 200 epochs; Table 6: lr 0.1, weight decay 5e-4 (as 0.5 wd ||w||^2 in
the loss), rho 0.05 on CIFAR-10 and 0.1 on CIFAR-100; the rest as in `configs/paper.py`
(batch 256, m = 32). Pick the cell after the colon, DATASET,AUGMENTATION,OPTIMIZER:

    python -m sam_jax.train --config=configs/table1_wrn28x10_200ep.py:cifar10,basic,sam \\
        --workdir=workdirs/wrn28x10_200ep/cifar10_basic_sam

Paper test error (%), mean and 95% interval of 5 runs:

    DATASET,AUGMENTATION    SAM        SGD
    cifar10,basic           2.7±0.1    3.5±0.1
    cifar10,cutout          2.3±0.1    2.6±0.1
    cifar10,aa              2.1±<0.1   2.3±0.1
    cifar100,basic          16.5±0.2   18.8±0.2
    cifar100,cutout         14.9±0.2   16.9±0.1
    cifar100,aa             13.6±0.2   15.8±0.2

AA is the AutoAugment CIFAR policy, then basic augmentation, then cutout (the AutoAugment
paper's CIFAR recipe; the original's --image_level_augmentations=autoaugment
--batch_level_augmentations=cutout).
"""

from configs import paper


def get_config(cell: str = "cifar10,basic,sam"):
  return paper.cell_config(cell, model_name="WideResnet28x10", num_epochs=200, learning_rate=0.1,
                           weight_decay=5e-4, rho={
                               "cifar10": 0.05,
                               "cifar100": 0.1
                           })
