"""TFDS builder `digits`: scikit-learn's offline copy of the UCI 8x8 handwritten digits.

Importing this module registers the builder, so `tfds.load("digits")` works with no network.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from sam_jax.data import tf_cpu  # noqa: F401  (TF without GPUs, before TFDS runs anything)

_DESCRIPTION = """\
The UCI "Optical Recognition of Handwritten Digits" test set as shipped with
scikit-learn (`sklearn.datasets.load_digits`): 1,797 8x8 grayscale images of the
digits 0-9, each pixel the count (0-16) of set pixels in a 4x4 block of a 32x32
bitmap. Pixels are rescaled to 0-255 as round(v * 255 / 16). The train/test split
is a fixed stratified 80%/20% split (scikit-learn `train_test_split`,
random_state=0): train 1,437 images, test 360.
"""

_HOMEPAGE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"

_CITATION = """\
@misc{alpaydin1998optical,
  author={Alpaydin, E. and Kaynak, C.},
  title={{Optical Recognition of Handwritten Digits}},
  year={1998},
  howpublished={UCI Machine Learning Repository},
  note={{DOI}: https://doi.org/10.24432/C50P49},
}
"""

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def rescale(images: np.ndarray) -> np.ndarray:
  """Maps sklearn's pixel counts 0..16 to uint8 0..255 as round(v * 255 / 16).

  Args:
    images: array of pixel values in [0, 16], any shape.

  Returns:
    A uint8 array of the same shape with values in [0, 255].
  """
  return np.round(np.asarray(images, np.float64) * 255.0 / 16.0).astype(np.uint8)


def split_indices() -> dict[str, np.ndarray]:
  """The fixed stratified 80/20 split of the 1,797 examples, as sorted sklearn indices.

  Returns:
    {"train": 1,437 indices, "test": 360 indices} into `load_digits()`'s order.
  """
  # sklearn is untyped: pyright infers load_digits() as the return_X_y tuple, not a Bunch.
  labels = sk_datasets.load_digits().target  # pyright: ignore[reportAttributeAccessIssue]
  train, test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
  return {"train": np.sort(train), "test": np.sort(test)}


class Digits(tfds.core.GeneratorBasedBuilder):
  """UCI handwritten digits (8x8, 10 classes) from scikit-learn, fully offline.

  Splits (fixed, stratified by class, `train_test_split(random_state=0)`):
    train: 1,437 examples (80%).
    test: 360 examples (20%).

  Each example is {"image": uint8 (8, 8, 1) in [0, 255], "label": int in [0, 9]};
  its key is the example's index in `sklearn.datasets.load_digits()`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: sklearn's load_digits, stratified 80/20 split, seed 0.",
  }
  # TFDS 4.9.10 derives `code_path` via a lazy `import importlib_resources`, a backport
  # it declares only for Python < 3.9, so download_and_prepare fails on newer Pythons
  # without it (tensorflow/datasets#11212). The file's own path is what it computes.
  code_path = tfds.core.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    """Features, description, homepage and citation of the dataset."""
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
        homepage=_HOMEPAGE,
        citation=_CITATION,
    )

  def _split_generators(self,
                        dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator[Any]]:
    """Returns the train/test generators; nothing is downloaded.

    Args:
      dl_manager: unused: the data ships with scikit-learn.

    Returns:
      {"train": generator, "test": generator}.
    """
    del dl_manager
    digits = sk_datasets.load_digits()  # a Bunch; pyright infers a tuple (see split_indices)
    images = rescale(digits.images)[..., None]  # pyright: ignore[reportAttributeAccessIssue]
    labels = digits.target  # pyright: ignore[reportAttributeAccessIssue]
    return {
        name: self._generate_examples(images, labels, indices)
        for name, indices in split_indices().items()
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray,
                         indices: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (sklearn index, example) for the given indices.

    Args:
      images: all images, uint8, shape (1797, 8, 8, 1).
      labels: all labels, shape (1797,).
      indices: which examples belong to this split.

    Yields:
      (key, {"image": ..., "label": ...}) with the key the sklearn index.
    """
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}
