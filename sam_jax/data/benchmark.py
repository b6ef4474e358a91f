"""Input-pipeline throughput: images/s of each training pipeline on synthetic data.

    python -m sam_jax.data.benchmark --batches 200

Feeds `pipeline.train_batches` CIFAR-shaped random uint8 images (50,000, like CIFAR's
training split) and times whole batches after a warm-up, on however many cores
tf.data may use here. No TFDS download, no accelerator.
"""

import os
import time

from absl import app, flags
import numpy as np

from sam_jax.data import pipeline

_BATCHES = flags.DEFINE_integer("batches", 200, "Timed batches per pipeline.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Examples per batch.")

SETTINGS = {  # name -> train_batches keyword arguments
    "cifar basic": dict(image_augmentation="basic"),
    "cifar basic + cutout": dict(image_augmentation="basic", batch_augmentation="cutout"),
}


def images_per_second(examples, batch_size: int, batches: int, **kwargs) -> float:
  stream = pipeline.train_batches(pipeline.get_dataset_info("cifar10"), examples, batch_size,
                                  seed=0, **kwargs)
  for _ in range(10):  # warm-up: tracing and filling the prefetch buffer
    next(stream)
  start = time.perf_counter()
  for _ in range(batches):
    next(stream)
  return batches * batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  examples = {"image": rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
              "label": rng.integers(0, 10, 50_000).astype(np.int32)}
  cores = os.cpu_count()
  print(f"{cores} cores, batch {_BATCH_SIZE.value}, {_BATCHES.value} batches timed")
  for name, kwargs in SETTINGS.items():
    rate = images_per_second(examples, _BATCH_SIZE.value, _BATCHES.value, **kwargs)
    print(f"{name:24s} {rate:10.0f} images/s  {rate / cores:8.0f} images/s per core")


if __name__ == "__main__":
  app.run(main)
