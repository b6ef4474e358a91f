"""The training augmentations a config asks for, and their application to one example.

`Augmentation` holds the choices (the config fields of the same names) and checks them
against the dataset; `augment_small` (CIFAR order) and `augment_streamed` (ImageNet
order) apply the image-level part to one uint8 image with a stateless key. The
batch-level part (mixup, cutout) is applied by the pipeline (`pipeline.py`).
"""

import dataclasses

from sam_jax.data import autoaugment, imagenet, image_ops
from sam_jax.data.datasets import DatasetInfo
from sam_jax.data.image_ops import FLIP, POLICY, fold_in
from sam_jax.data.policies import POLICIES, magnitudes
from sam_jax.data.tf_cpu import tf
from sam_jax.errors import UsageError

_WITH_POLICY = ("autoaugment", "aa-only", "randaugment")  # image choices that run a policy


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The training augmentations (the config fields of the same names).

  image: none; basic (crop and flip: 4-pixel reflect-pad crop for the small datasets, the
    Inception crop for JPEG datasets); autoaugment (the AutoAugment policy, then basic,
    as the original); aa-only (the policy alone; the original's choice for SVHN);
    randaugment (RandAugment N=randaug_num_layers, M=randaug_magnitude, then basic).
  batch: none; cutout; mixup (one Beta(alpha, alpha) weight w per batch, w = max(w, 1-w),
    each example mixed with the batch reversed, labels too); mixcut (mixup, then cutout).
  """
  image: str = "basic"
  batch: str = "none"
  cutout_length: int = 16
  cutout_mask: str = "batch"  # one square per batch (the original) or per "example"
  mixup_alpha: float = 1.0
  autoaugment_policy: str | None = None  # None: the dataset's own
  faithful: bool = False  # the original's magnitudes and ops (`policies`), at every size
  randaug_num_layers: int = 2
  randaug_magnitude: float = 9

  @classmethod
  def from_config(cls, config) -> "Augmentation":
    return cls(config.image_level_augmentations, config.batch_level_augmentations,
               config.cutout_length, config.cutout_mask, config.mixup_alpha,
               config.autoaugment_policy, config.autoaugment_faithful, config.randaug_num_layers,
               config.randaug_magnitude)

  def policy(self, info: DatasetInfo) -> str | None:
    return self.autoaugment_policy or info.autoaugment_policy

  def check(self, info: DatasetInfo) -> None:
    """Raises a one-line UsageError for an AutoAugment without a policy for `info`'s
    dataset, or a cutout square that blanks every image whole (the choices themselves are
    checked with the config, `validation.py`)."""
    if self.image in ("autoaugment", "aa-only") and self.policy(info) not in POLICIES:
      raise UsageError(f"No AutoAugment policy was learned on {info.tfds_name}: set "
                       f"--config.autoaugment_policy to one of {', '.join(POLICIES)} to use one.")
    side = min(info.image_shape[:2], key=lambda x: x or 0)
    # `image_ops.cutout` zeroes rows [c - L // 2, c - L // 2 + L) for c in [0, side): all of
    # them, wherever c falls, once L >= 2 side - 1.
    if self.batch in ("cutout", "mixcut") and side and self.cutout_length >= 2 * side - 1:
      raise UsageError(f"--config.cutout_length={self.cutout_length} blanks every {side}x{side} "
                       f"{info.tfds_name} image whole (the square is centred anywhere in it): "
                       f"use a length below {2 * side - 1}, e.g. {max(side // 2, 1)}.")


def _policy_ops(image, key, info: DatasetInfo, aug: Augmentation, size: int):
  """AutoAugment or RandAugment on a uint8 image, as `aug` asks (else the image)."""
  if aug.image in ("autoaugment", "aa-only"):
    policy = aug.policy(info)
    if policy is None:  # `Augmentation.check` says so before any pipeline is built
      raise UsageError(f"No AutoAugment policy for {info.tfds_name}: set "
                       "--config.autoaugment_policy.")
    return autoaugment.autoaugment(image, key, policy, magnitudes(policy, size, aug.faithful))
  if aug.image == "randaugment":
    return autoaugment.randaugment(image, key, aug.randaug_num_layers, aug.randaug_magnitude,
                                   magnitudes("randaugment", size, aug.faithful))
  return image


def augment_small(image, key, info: DatasetInfo, aug: Augmentation):
  """CIFAR order: policy on uint8, then reflect-pad crop and flip."""
  image = _policy_ops(image, fold_in(key, POLICY), info, aug, info.fixed_image_shape[0])
  if aug.image in ("basic", "autoaugment", "randaugment"):
    image = image_ops.crop_and_flip(image, key, info)
  return image


def augment_streamed(data, key, info: DatasetInfo, aug: Augmentation, image_size: int,
                     resize_method: str = "bicubic"):
  """ImageNet order: Inception crop, policy, flip (the centre crop for `none`).

  A float crop (the "bicubic_tf1" resize) is cast to uint8 before a policy as the
  original did, truncating and wrapping around what overshoots [0, 255]
  (dataset_source_imagenet.py:193).
  """
  if aug.image == "none":
    return imagenet.center_crop(data, image_size, resize_method)
  image = imagenet.inception_crop(data, key, image_size, resize_method)
  if aug.image in _WITH_POLICY:
    image = _policy_ops(tf.cast(image, tf.uint8), fold_in(key, POLICY), info, aug, image_size)
  return image if aug.image == "aa-only" else image_ops.flip(image, fold_in(key, FLIP), info)
