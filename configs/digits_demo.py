"""Demo: a small WideResNet trained with SAM on the offline UCI digits (no download).

    bash scripts/demo.sh
    # = python -m sam_jax.train --config=configs/digits_demo.py --workdir=workdirs/digits_demo

Expected: test error below 3% (at least 97% accuracy) on the 360 held-out digits,
in a few minutes on a 2-core CPU.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "digits"
  config.model_name = "WideResnet10x2"
  config.num_epochs = 30
  config.batch_size = 64
  config.learning_rate = 0.05
  config.weight_decay = 5e-4
  config.sam.rho = 0.05
  config.log_every_steps = 22
  config.evaluate_every = 5
  config.save_progress_seconds = 60
  return config
