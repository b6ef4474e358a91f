"""Paper Table 1, rows "PyramidNet+ShakeDrop", Basic and Cutout, on CIFAR-10/100.

Pyramid_ShakeDrop (PyramidNet-272, alpha 200, ShakeDrop) for 1800 epochs (the original
code's setting); Table 6: lr 0.02 on CIFAR-10 and 0.05 on CIFAR-100, weight decay 5e-4,
rho 0.05; the rest as in `configs/paper.py` (batch 256, m = 32). The ascent gradient
uses the same ShakeDrop coefficients forward and backward, and the SAM pass draws new
ShakeDrop gates (the uniform coefficients shared), as the original did
(`sam.redraw_masks`, set by `configs/paper.py`; see `sam_jax/models/layers.py`). Pick the
cell after the colon, DATASET,AUGMENTATION,OPTIMIZER:

    python -m sam_jax.train --config=configs/table1_pyramid_shakedrop.py:cifar100,cutout,sam \\
        --workdir=workdirs/pyramid_shakedrop/cifar100_cutout_sam

Paper test error (%), mean and 95% interval of 5 runs:

    DATASET,AUGMENTATION    SAM        SGD
    cifar10,basic           2.1±0.1    2.5±0.1
    cifar10,cutout          1.6±<0.1   1.9±0.1
    cifar10,aa              1.4±<0.1   1.6±<0.1
    cifar100,basic          13.3±0.2   14.5±0.1
    cifar100,cutout         11.3±0.1   11.8±0.2
    cifar100,aa             10.3±0.1   10.6±0.1

AA is the AutoAugment CIFAR policy, then basic augmentation, then cutout (the AutoAugment
paper's CIFAR recipe; the original's --image_level_augmentations=autoaugment
--batch_level_augmentations=cutout).
"""

from configs import paper


def get_config(cell: str = "cifar10,basic,sam"):
  learning_rate = {"cifar10": 0.02, "cifar100": 0.05}
  rho = {"cifar10": 0.05, "cifar100": 0.05}
  return paper.cell_config(cell, model_name="Pyramid_ShakeDrop", num_epochs=1800,
                           learning_rate=learning_rate, weight_decay=5e-4, rho=rho)
