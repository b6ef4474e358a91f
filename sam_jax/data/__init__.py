"""Input pipelines (the only package that imports TensorFlow; it never sees a GPU)."""
