"""Experiment configs, read by path (`--config=configs/FILE.py[:CELL]`); the wheel carries
a copy as `sam_jax.experiments.configs` (the installed binary's default config).

Each file's `get_config()` builds on `default.get_config()`, the one config schema; the
argument after the colon is parsed by `cells.parse`.
"""
