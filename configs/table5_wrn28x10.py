"""Paper Table 5 (Appendix B.1), Wide-ResNet-28-10 rows on SVHN and Fashion-MNIST.

SVHN trains on train + extra (604,388 digits), in the original's order: train, then
extra, through a 50,000-example shuffle buffer (dataset_source.py:116, :311-313).
Table 7: SVHN lr 0.01, weight decay 5e-4, rho 0.01; Fashion-MNIST lr 0.1, weight decay
5e-4, rho 0.05; the rest as in `configs/paper.py` (batch 256, m = 32). The paper does not
give the number of epochs: this keeps the original binary's default of 200. The
Fashion-MNIST "Auto augment" row is cutout only (Appendix B.1), so it is the `cutout`
cell here. Pick the cell after the colon, DATASET,AUGMENTATION,OPTIMIZER:

    python -m sam_jax.train --config=configs/table5_wrn28x10.py:fashion_mnist,cutout,sam \\
        --workdir=workdirs/table5_wrn28x10/fashion_mnist_cutout_sam

Paper test error (%), mean and 95% interval of 5 runs ("SGD" is the paper's "Baseline"):

    DATASET,AUGMENTATION    SAM        SGD
    svhn,basic              1.42±0.02  1.58±0.03
    svhn,aa                 0.99±0.01  1.14±0.04
    fashion_mnist,basic     3.98±0.05  4.57±0.07
    fashion_mnist,cutout    3.61±0.06  3.86±0.14

The SVHN "Auto augment" row is the `aa` cell: the SVHN AutoAugment policy without crops or
flips (the original's `aa-only`, which its code recommends for SVHN), then cutout.
"""

from configs import paper


def get_config(cell: str = "svhn,basic,sam"):
  dataset = cell.split(",")[0]
  augmentations = {"basic": ("basic", "none"), "cutout": ("basic", "cutout")}
  if dataset == "svhn":
    augmentations = {"basic": ("basic", "none"), "aa": ("aa-only", "cutout")}
  rho = {"svhn": 0.01, "fashion_mnist": 0.05}
  return paper.cell_config(cell, model_name="WideResnet28x10", num_epochs=200,
                           learning_rate=0.1 if dataset == "fashion_mnist" else 0.01,
                           weight_decay=5e-4, rho=rho, augmentations=augmentations)
