"""Symmetric label noise for the paper's robustness study (Foret et al. 2021, Table 4).

With probability `rate`, independently per example, the label is replaced by a class drawn
uniformly: by default one of the *other* classes, so the realised noise rate is `rate` in
expectation; with `keep_possible=True` any of the K classes, the true one included, so the
realised rate is rate (K - 1) / K. The latter is the convention of the papers Table 4
follows: Zhang et al. (2017, "each image independently corrupted as a uniform random
class") through MentorNet and MentorMix (Jiang et al. 2018, 2020: "change the label of
each image independently to a uniform random class with probability p"), whose Table 4
baselines the SAM paper compares with. The SAM code does not contain its noise generator,
so which one its runs used cannot be checked; the realised rate is reported either way. Both
draws are a hash of (seed, the example's image bytes): an example keeps the same noisy
label every epoch, after a resume, and whichever process reads it. Only the training
split is ever passed here; evaluation labels stay clean.
"""

import zlib

import numpy as np

from sam_jax.errors import UsageError

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """A 64-bit mixing function (Steele et al. 2014): uint64 in, well-scrambled uint64 out."""
  with np.errstate(over="ignore"):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
    return x ^ (x >> np.uint64(31))


def _uniforms(images: np.ndarray, seed: int, stream: int) -> np.ndarray:
  """One U[0, 1) per image, a function of (seed, stream, image bytes) only."""
  digests = np.array([zlib.crc32(image.tobytes()) for image in images], np.uint64)
  with np.errstate(over="ignore"):
    keys = digests + (np.uint64(seed) << np.uint64(34)) + (np.uint64(stream) << np.uint64(32))
  return (_splitmix64(keys) >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


def symmetric_noise(examples: dict[str, np.ndarray], rate: float, num_classes: int, seed: int,
                    keep_possible: bool = False) -> tuple[dict[str, np.ndarray], float]:
  """(examples with noisy labels, realised fraction of changed labels).

  `keep_possible`: the redrawn label is uniform over all classes (may equal the true one),
  not over the other classes.
  """
  if not 0.0 <= rate <= 1.0:
    raise UsageError(f"label_noise must be a fraction in [0, 1], got {rate}.")
  labels = examples["label"]
  flip = _uniforms(examples["image"], seed, 0) < rate
  draws = _uniforms(examples["image"], seed, 1)
  if keep_possible:
    redrawn = np.floor(draws * num_classes).astype(labels.dtype)
  else:
    redrawn = (labels + 1 + np.floor(draws * (num_classes - 1)).astype(labels.dtype)) % num_classes
  noisy = np.where(flip, redrawn, labels)
  realised = float(np.mean(noisy != labels)) if len(labels) else 0.0
  return {**examples, "label": noisy.astype(labels.dtype)}, realised
