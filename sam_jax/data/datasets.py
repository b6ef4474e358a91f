"""The datasets the pipelines know: TFDS names, classes, shapes and normalisation constants.

The constants are the original code's (google-research/sam). `get_dataset_info(name)` is
the registry's one entry point; an unknown name is a `UsageError` listing the known ones.
"""

import dataclasses

from sam_jax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the pipeline needs to know about one dataset."""
  tfds_name: str
  num_classes: int
  image_shape: tuple[int | None, int | None, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_splits: tuple[str, ...] = ("train",)
  test_split: str = "test"
  crop_padding: int = 4  # reflect-pad then random crop back
  flip: bool = True  # random left-right flip; the original flips SVHN too, so do we
  autoaugment_policy: str | None = None  # the AutoAugment policy learned for it
  # Without the test set, the examples of the first train split from here on are the
  # validation set ("90%" unless the original used a count).
  holdout_start: str = "90%"
  # JPEG datasets of any image size: streamed from disk, Inception-cropped to a model
  # resolution (default_image_size for models without one, such as ResNet).
  streamed: bool = False
  default_image_size: int | None = None

  @property
  def fixed_image_shape(self) -> tuple[int, int, int]:
    """image_shape of a dataset whose images all have one size (not the JPEG datasets)."""
    height, width, channels = self.image_shape
    if height is None or width is None:
      raise ValueError(f"{self.tfds_name}'s images have no fixed size: give an image size.")
    return height, width, channels


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _jpeg_dataset(tfds_name: str, num_classes: int, train_splits=("train",),
                  test_split="test") -> DatasetInfo:
  """ImageNet and the finetuning datasets: ImageNet's crops and normalisation."""
  return DatasetInfo(tfds_name, num_classes, (None, None, 3), IMAGENET_MEAN, IMAGENET_STD,
                     train_splits, test_split, autoaugment_policy="imagenet", streamed=True,
                     default_image_size=224)


DATASETS = {
    # dataset_source.py:210-214 and :329-330, digit for digit.
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), (0.49139968, 0.48215841, 0.44653091),
                           (0.24703223, 0.24348513, 0.26158784), autoaugment_policy="cifar"),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), (0.50707516, 0.48654887, 0.44091784),
                            (0.26733429, 0.25643846, 0.27615047), autoaugment_policy="cifar"),
    "svhn": DatasetInfo("svhn_cropped", 10, (32, 32, 3), (0.43090966, 0.4302428, 0.44634357),
                        (0.19759192, 0.20029082, 0.19811132), train_splits=("train", "extra"),
                        autoaugment_policy="svhn", holdout_start="65929"),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, (28, 28, 1), (0.1307,), (0.3081,)),
    # Mean and std of the 1,437 training images, pixels scaled to [0, 1].
    "digits": DatasetInfo("digits", 10, (8, 8, 1), (0.3054,), (0.3760,), crop_padding=1,
                          flip=False),
    "imagenet": _jpeg_dataset("imagenet2012", 1000, test_split="validation"),
    # Finetuning (paper Table 3): train (+ validation where TFDS has one) against test.
    "oxford_flowers102": _jpeg_dataset("oxford_flowers102", 102, ("train", "validation")),
    "oxford_iiit_pet": _jpeg_dataset("oxford_iiit_pet", 37),
    "cars196": _jpeg_dataset("cars196", 196),
    "food101": _jpeg_dataset("food101", 101, test_split="validation"),
    "caltech_birds2011": _jpeg_dataset("caltech_birds2011", 200),
}

NORMALIZATIONS = ("dataset", "minus_one_to_one")


def get_dataset_info(name: str, normalization: str = "dataset") -> DatasetInfo:
  """The DatasetInfo of `name`, or a UsageError listing the known datasets.

  normalization: "dataset", (x - mean) / std with the dataset's constants; or
  "minus_one_to_one", pixels mapped linearly from [0, 1] to [-1, 1] (mean = std = 0.5:
  big_vision's value_range(-1, 1), which the ViT and Mixer recipes use).
  """
  if name not in DATASETS:
    raise UsageError(f"Unknown dataset '{name}': choose one of {', '.join(DATASETS)}.")
  info = DATASETS[name]
  if normalization == "minus_one_to_one":
    half = (0.5,) * len(info.mean)
    info = dataclasses.replace(info, mean=half, std=half)
  return info
