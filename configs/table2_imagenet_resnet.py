"""Paper Table 2: ResNet-50/101/152 on ImageNet for 100, 200 or 400 epochs, SAM and not.

Sec. 3.1: 224-pixel crops, batch 4096 on 32 TPUv3 cores (so m = 128 examples per
perturbation), lr 1.0 with a per-step cosine decay, SGD with momentum 0.9, label
smoothing 0.1, weight decay 1e-4, rho 0.05. The model is the ResNet v1.5 the original
code trained (sam_jax/imagenet_models/resnet.py: no ReLU after the stem BatchNorm,
lecun-normal initialisers; see sam_jax/models/resnet.py); `--config.model_name=
Resnet50_v1.5` trains the standard one instead. Top-5 error is reported too. Pick the
cell after the colon,
MODEL,EPOCHS,OPTIMIZER with MODEL in Resnet50|Resnet101|Resnet152:

    python -m sam_jax.train --config=configs/table2_imagenet_resnet.py:Resnet50,100,sam \\
        --workdir=workdirs/imagenet/resnet50_100ep_sam

Paper test error (%), mean and 95% interval of 5 runs (top-1 SAM, top-1 SGD, top-5 SAM,
top-5 SGD):

    MODEL,EPOCHS     SAM top-1   SGD top-1   SAM top-5   SGD top-5
    Resnet50,100     22.5±0.1    22.9±0.1    6.28±0.08   6.62±0.11
    Resnet50,200     21.4±0.1    22.3±0.1    5.82±0.03   6.37±0.04
    Resnet50,400     20.9±0.1    22.3±0.1    5.51±0.03   6.40±0.06
    Resnet101,100    20.2±0.1    21.2±0.1    5.12±0.03   5.66±0.05
    Resnet101,200    19.4±0.1    20.9±0.1    4.76±0.03   5.66±0.04
    Resnet101,400    19.0±<0.01  22.3±0.1    4.65±0.05   6.41±0.06
    Resnet152,100    19.2±<0.01  20.4±<0.0   4.69±0.04   5.39±0.06
    Resnet152,200    18.5±0.1    20.3±0.2    4.37±0.03   5.39±0.07
    Resnet152,400    18.4±<0.01  20.9±<0.0   4.35±0.04   5.84±0.07

Input: `imagenet2012` from TFDS (prepared by hand, see its TFDS page), Inception crop to 224
and flip for training, the 224/256 centre crop for evaluation, both resized by the
original's TF1 bicubic op (dataset_source_imagenet.py:107); no RandAugment or mixup. The
paper's 5 runs had independent initialisations (Sec. 3.1): --config.seed=0..4.
"""

from configs import cells, default, original

MODELS, EPOCHS = ("Resnet50", "Resnet101", "Resnet152"), ("100", "200", "400")


def get_config(arg: str = "Resnet50,100,sam"):
  cell = cells.parse(arg, model=MODELS, epochs=EPOCHS, optimizer=cells.OPTIMIZERS)
  config = default.get_config()
  config.dataset = "imagenet"
  config.model_name = cell.model
  original.official_code(config)  # float32, the original's resize (see configs/paper.py)
  config.num_epochs = int(cell.epochs)
  config.batch_size = 4096
  config.sam.m = 128  # 4096 over 32 TPU cores
  config.learning_rate = 1.0
  config.weight_decay = 1e-4
  config.label_smoothing = 0.1
  config.sam.rho = cells.sam_rho(cell.optimizer, 0.05)
  config.compute_top_5_error_rate = True
  config.log_every_steps = 100
  config.save_progress_seconds = 1800
  return config
