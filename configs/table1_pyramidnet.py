"""Paper Table 1, rows "PyramidNet" (vanilla: no ShakeDrop), Basic and Cutout, CIFAR-10/100.

Pyramid_vanilla (PyramidNet-272, alpha 200, bottleneck) for 1800 epochs (the paper does
not restate the epochs; 1800 as for its other PyramidNet); Table 6 "Pyramid vanilla":
lr 0.05, weight decay 5e-4, rho 0.05 on CIFAR-10 and 0.2 on CIFAR-100; the rest as in
`configs/paper.py` (batch 256, m = 32). Pick the cell after the colon,
DATASET,AUGMENTATION,OPTIMIZER:

    python -m sam_jax.train --config=configs/table1_pyramidnet.py:cifar100,basic,sam \\
        --workdir=workdirs/pyramidnet/cifar100_basic_sam

Paper test error (%), mean and 95% interval of 5 runs:

    DATASET,AUGMENTATION    SAM        SGD
    cifar10,basic           2.7±0.1    4.0±0.1
    cifar10,cutout          1.9±0.1    2.5±0.1
    cifar10,aa              1.6±0.1    1.9±0.1
    cifar100,basic          14.6±0.4   19.7±0.3
    cifar100,cutout         12.6±0.2   16.4±0.1
    cifar100,aa             11.6±0.1   14.6±0.1

AA is the AutoAugment CIFAR policy, then basic augmentation, then cutout (the AutoAugment
paper's CIFAR recipe; the original's --image_level_augmentations=autoaugment
--batch_level_augmentations=cutout).
"""

from configs import paper


def get_config(cell: str = "cifar10,basic,sam"):
  return paper.cell_config(cell, model_name="Pyramid_vanilla", num_epochs=1800, learning_rate=0.05,
                           weight_decay=5e-4, rho={
                               "cifar10": 0.05,
                               "cifar100": 0.2
                           })
