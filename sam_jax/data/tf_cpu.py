"""TensorFlow for input pipelines and checkpoint reading only: it never takes a GPU from JAX.

Import TensorFlow through here (`from sam_jax.data.tf_cpu import tf`); the first import
hides every GPU from it before it can initialise one.
"""

import tensorflow as tf

try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF's devices were initialised before this import; none are ours
  pass

__all__ = ["tf"]
