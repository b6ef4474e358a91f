"""Small-scale reproduction of the paper's sharpness results on the offline UCI digits.

A CIFAR-style ResNet-8 on the 1,437 training digits (8x8, no download), 20 epochs of
batch 128, SGD or SAM, clean labels or symmetric label noise, evaluated on the 360
clean held-out digits. Pick the cell after the colon, NOISE_PERCENT,OPTIMIZER[,M]:

    python -m sam_jax.train --config=configs/digits_sharpness.py:40,sam \\
        --workdir=workdirs/digits_sharpness/40_sam --config.seed=1

NOISE_PERCENT is 0, 20, 40, 60 or 80; OPTIMIZER sam or sgd (rho 0); M the examples per
replica (m-sharpness; default 16, i.e. 8 replicas per batch, as the paper's CIFAR runs
had 8 of 32). rho is 0.1, and 0.05 at 80% noise, as the paper's Table 4. The label noise
is drawn with the run's seed (`label_noise_seed` = `seed`), so a SAM and an SGD run of
the same seed see the same noisy labels.

`scripts/reproduce_digits.py` runs every cell over several seeds, analyses each final
model (`python -m sam_jax.analysis`: Hessian lambda_max, m-sharpness) and writes the
table in the README; it takes about 20 minutes on a 2-core CPU.
"""

from configs import cells, default

NOISE = ("0", "20", "40", "60", "80")


def get_config(arg: str = "0,sam"):
  cell = cells.parse(arg, noise_percent=NOISE, optimizer=cells.OPTIMIZERS, m=16)
  noise = int(cell.noise_percent)
  config = default.get_config()
  config.dataset = "digits"
  config.model_name = "Resnet8"
  config.num_epochs = 20
  config.batch_size = 128
  config.sam.m = cell.m
  config.learning_rate = 0.1
  config.weight_decay = 5e-4
  config.label_noise = noise / 100
  config.label_noise_seed = config.get_ref("seed")  # follows --config.seed
  config.sam.rho = cells.sam_rho(cell.optimizer, 0.05 if noise == 80 else 0.1)
  config.log_every_steps = 110
  config.evaluate_every = 20
  config.keep_checkpoints = 1
  return config
