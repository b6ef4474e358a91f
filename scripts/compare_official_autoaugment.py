"""Runs every AutoAugment op side by side with google-research/sam's own autoaugment.py.

    .venv/bin/python scripts/compare_official_autoaugment.py /path/to/google-research/sam

The original imports `tensorflow_addons`, which no longer installs beside TensorFlow
2.21; its three transforms (translate, rotate, transform) are projective transforms on
TensorFlow's ImageProjectiveTransformV3 with nearest sampling and constant fill, so a
small stand-in module provides them. For each of the 16 ops, levels 0..10, both signs
and five images (noise, smooth, low contrast, 40x24, 224x224), the script prints how
many outputs differ from ours in the faithful mode (`policies.magnitudes(faithful=True)`);
"0 of 110" everywhere is the claim of docs/guides/configs.md.
"""

import argparse
import importlib
import pathlib
import sys
import tempfile
import types

import numpy as np

from sam_jax.data import autoaugment as ours
from sam_jax.data import policies
from sam_jax.data.tf_cpu import tf

GEOMETRIC = ("Rotate", "TranslateX", "TranslateY", "ShearX", "ShearY", "Cutout")


def tfa_stand_in() -> types.ModuleType:
  """tensorflow_addons.image's translate, rotate and transform (tfa 0.x semantics)."""
  def transform(images, transforms, interpolation="NEAREST", fill_mode="CONSTANT", fill_value=0.0):
    transforms = tf.reshape(tf.cast(transforms, tf.float32), [1, 8])
    return tf.raw_ops.ImageProjectiveTransformV3(images=images[None], transforms=transforms,
                                                 output_shape=tf.shape(images)[:2],
                                                 fill_value=fill_value, fill_mode=fill_mode,
                                                 interpolation=interpolation)[0]

  def translate(images, translations):
    dx, dy = tf.unstack(tf.cast(translations, tf.float32))
    return transform(images, tf.stack([1.0, 0.0, -dx, 0.0, 1.0, -dy, 0.0, 0.0]))

  def rotate(images, angles):
    height, width = tf.unstack(tf.cast(tf.shape(images)[:2], tf.float32))
    cos, sin = tf.cos(angles), tf.sin(angles)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return transform(images, tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]))

  image = types.ModuleType("tensorflow_addons.image")
  # typeshed's ModuleType takes no new attributes; a module object takes any.
  vars(image).update(transform=transform, translate=translate, rotate=rotate)
  return image


def import_official(repo: pathlib.Path):
  """The original's autoaugment module, imported as `sam.autoaugment.autoaugment`."""
  source = repo / "autoaugment"
  if not (source / "autoaugment.py").exists():
    sys.exit(f"No autoaugment/autoaugment.py under {repo}: pass a google-research/sam checkout.")
  package = pathlib.Path(tempfile.mkdtemp()) / "sam"
  package.mkdir()
  (package / "__init__.py").touch()
  (package / "autoaugment").symlink_to(source.resolve())
  sys.path.insert(0, str(package.parent))
  addons = types.ModuleType("tensorflow_addons")
  addons.image = tfa_stand_in()  # pyright: ignore[reportAttributeAccessIssue]  (see tfa_stand_in)
  sys.modules.update({"tensorflow_addons": addons, "tensorflow_addons.image": addons.image})
  return importlib.import_module("sam.autoaugment.autoaugment")  # importable from here on


def test_images() -> list[np.ndarray]:
  rng = np.random.default_rng(0)

  def smooth(height, width):
    y, x = np.mgrid[:height, :width]
    waves = np.stack([128 + 100 * np.sin(x / 5 + c) * np.cos(y / 7 - c) for c in range(3)], -1)
    return np.clip(waves + rng.normal(0, 20, waves.shape), 0, 255).astype(np.uint8)

  noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  return [
      noise,
      smooth(32, 32), (noise // 3 + 70).astype(np.uint8),
      smooth(40, 24),
      smooth(224, 224)
  ]


def count_differences(official, name: str) -> tuple[int, int]:
  """(outputs that differ, outputs compared) for op `name` at every level and sign."""
  hparams = official.HParams(cutout_const=100, translate_const=250)
  mags = policies.magnitudes("cifar", 32, faithful=True)
  differ = total = 0
  for level in range(11):
    for sign in (1.0, -1.0):
      official._randomly_negate_tensor = lambda value, s=sign: value * s
      ours._signed = lambda value, key, s=sign: value * s
      for image in test_images():
        key = tf.constant([7, level], tf.int64)
        if name == "Cutout":  # the original's centre draws, made ours
          centre = iter([
              tf.random.stateless_uniform([], ours.fold_in(key, i), 0, image.shape[i], tf.int32)
              for i in (0, 1)
          ])
          official.tf.random_uniform = lambda *args, **kwargs: next(centre)
        args = official.level_to_arg(hparams)[name](level)
        if name in GEOMETRIC:
          args += (tf.constant([128, 128, 128], tf.uint8),)
        want = official.NAME_TO_FUNC[name](tf.constant(image), *args).numpy()
        got = ours.apply_op(tf.constant(image), name, float(level), key, mags).numpy()
        differ += int(not np.array_equal(got, want))
        total += 1
  return differ, total


def main():
  parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
  parser.add_argument("official", type=pathlib.Path, help="a google-research/sam checkout")
  official = import_official(parser.parse_args().official)
  for name in official.NAME_TO_FUNC:
    differ, total = count_differences(official, name)
    print(f"{name:13s} {differ} of {total} outputs differ")


if __name__ == "__main__":
  main()
