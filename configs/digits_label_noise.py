"""Table 4's label-noise mechanism at small scale: ResNet-8 on the offline digits, 200 epochs.

The paper (Sec. 3.3, Table 4) trains ResNet-32 on CIFAR-10 with symmetric label noise for
200 epochs, long enough for SGD to memorise the wrong labels, and finds SAM far more
robust (clean test accuracy at 80% noise: 77.9% vs 26.2%; at 40%: 93.4% vs 68.8%). This config is
`digits_sharpness.py` (ResNet-8, batch 128, lr 0.1 cosine, rho 0.1 and 0.05 at 80%
noise, label noise drawn with the run's seed) trained for the paper's 200 epochs, 2,200
steps, instead of 20, and it also scores the training set with the noisy labels it
learns from. A ResNet-8 is small enough for 18 such runs (0/40/80% noise, SGD and SAM,
3 seeds) to take 27 minutes on a 2-core CPU, and big enough for SGD to memorise 80%
noise (5% training error on the noisy labels; docs/guides/sharpness.md).
Pick the cell after the colon, NOISE_PERCENT,OPTIMIZER:

    python -m sam_jax.train --config=configs/digits_label_noise.py:80,sgd \\
        --workdir=workdirs/digits_label_noise/80_sgd --config.seed=1

`scripts/reproduce_label_noise.py` runs the grid and writes the table of
docs/digits_label_noise/results.md.
"""

from configs import cells, digits_sharpness


def get_config(arg: str = "80,sam"):
  cell = cells.parse(arg, noise_percent=digits_sharpness.NOISE, optimizer=cells.OPTIMIZERS)
  config = digits_sharpness.get_config(f"{cell.noise_percent},{cell.optimizer}")
  config.num_epochs = 200
  config.also_eval_on_training_set = True  # the error on the noisy training labels
  config.evaluate_every = 25
  config.log_every_steps = 550
  return config
