"""Sharpness of trained models: Hessian spectra (`hessian`), m-sharpness (`sharpness`), the
report and binary over a training workdir (`report`, `python -m sam_jax.analysis`)."""
