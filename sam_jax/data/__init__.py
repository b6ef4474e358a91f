"""Input pipelines: TFDS datasets, augmentations, label noise, the offline digits.

The only package that imports TensorFlow (through `tf_cpu`, so that it never sees a GPU),
with the TF checkpoint reader of `sam_jax.pretrained`.
"""
