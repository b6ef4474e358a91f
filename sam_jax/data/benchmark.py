"""Input-pipeline throughput: images/s of each training pipeline on synthetic data.

    python -m sam_jax.data.benchmark --batches 100

CIFAR rows feed `pipeline.train_batches` 50,000 random 32x32 uint8 images (CIFAR's
training split is that size), in a new permutation every epoch and, last, in the
original's order (a 50,000-example shuffle buffer). The ImageNet rows first write
synthetic JPEGs (random sizes around ImageNet's mean, 500x375) into a TFDS dataset in a
temporary folder, then stream them through the real JPEG pipeline: Inception crop to 224
(resized by `tf.image.resize`, then by the original's TF1 op), RandAugment (2, 9), flip.
Whole batches are timed after a warm-up, on however many cores tf.data may use. No
download, no accelerator.
"""

import os
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from sam_jax.data import pipeline
from sam_jax.data.augmentation import Augmentation
from sam_jax.data.datasets import get_dataset_info
from sam_jax.data.loading import StreamedSplit
from sam_jax.data.tf_cpu import tf

_BATCHES = flags.DEFINE_integer("batches", 200, "Timed batches per pipeline.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Examples per batch.")
_JPEGS = flags.DEFINE_integer("jpegs", 2000, "Synthetic JPEGs for the ImageNet row.")

CIFAR_SETTINGS = {
    "cifar basic": Augmentation(image="basic"),
    "cifar basic + cutout": Augmentation(image="basic", batch="cutout"),
    "cifar autoaugment + cutout": Augmentation(image="autoaugment", batch="cutout"),
    "cifar mixup": Augmentation(image="basic", batch="mixup"),
}


def images_per_second(stream, batch_size: int, batches: int) -> float:
  for _ in range(10):  # warm-up: tracing and filling the prefetch buffer
    next(stream)
  start = time.perf_counter()
  for _ in range(batches):
    next(stream)
  return batches * batch_size / (time.perf_counter() - start)


def synthetic_jpegs(data_dir: str, count: int) -> StreamedSplit:
  """`count` random photos-sized JPEGs as a prepared TFDS dataset in `data_dir`."""
  rng = np.random.default_rng(0)

  def examples():
    for i in range(count):
      height, width = rng.integers(300, 450), rng.integers(400, 600)
      # Smooth content compresses like a photo; pure noise would not.
      small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
      image = np.repeat(np.repeat(small, 16, 0), 16, 1)[:height, :width]
      yield {"image": image, "label": i % 1000}

  signature = {
      "image": tf.TensorSpec((None, None, 3), tf.uint8),
      "label": tf.TensorSpec((), tf.int64)
  }
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name="synthetic_jpegs", version="1.0.0", data_dir=data_dir, split_datasets={
          "train": tf.data.Dataset.from_generator(examples, output_signature=signature)
      }, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=1000)
      }))
  return StreamedSplit(builder, "train", count)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  examples = {
      "image": rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
      "label": rng.integers(0, 10, 50_000).astype(np.int32)
  }
  cores = os.cpu_count()
  batch, batches = _BATCH_SIZE.value, _BATCHES.value
  print(f"{cores} cores, batch {batch}, {batches} batches timed")

  def report(name, rate):
    print(f"{name:34s} {rate:10.0f} images/s  {rate / cores:8.0f} images/s per core")

  cifar = get_dataset_info("cifar10")
  for name, augmentation in CIFAR_SETTINGS.items():
    stream = pipeline.train_batches(cifar, examples, batch, seed=0, augmentation=augmentation)
    report(name, images_per_second(stream, batch, batches))
  stream = pipeline.train_batches(cifar, examples, batch, seed=0,
                                  augmentation=CIFAR_SETTINGS["cifar basic"], shuffle_buffer=50_000)
  report("cifar basic, 50,000 buffer order", images_per_second(stream, batch, batches))
  with tempfile.TemporaryDirectory() as data_dir:
    split = synthetic_jpegs(data_dir, _JPEGS.value)
    for method in ("bicubic", "bicubic_tf1"):
      stream = pipeline.train_batches(
          get_dataset_info("imagenet"), split, batch, seed=0,
          augmentation=Augmentation(image="randaugment"), image_size=224, resize_method=method)
      report(f"imagenet 224 + randaugment, {method}",
             images_per_second(stream, batch, max(1, batches // 10)))


if __name__ == "__main__":
  app.run(main)
