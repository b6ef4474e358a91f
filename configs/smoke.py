"""A tiny run for tests: two short epochs of a tiny WideResNet (10x1) on (mock) CIFAR-10.

    python -m sam_jax.train --config=configs/smoke.py --workdir=/tmp/smoke
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model_name = "WideResnet10x1"
  config.num_epochs = 2
  config.batch_size = 16
  config.learning_rate = 0.05
  config.log_every_steps = 2
  config.save_progress_seconds = 0  # a checkpoint at every log step
  return config
