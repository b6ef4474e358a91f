"""sam-jax: Sharpness-Aware Minimization in JAX, Flax and Optax."""

import pathlib

import setuptools

requirements = [
    line.strip() for line in (pathlib.Path(__file__).parent / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setuptools.setup(
    name="sam-jax",
    version="0.1.0",
    description="Sharpness-Aware Minimization (SAM) and its family in JAX/Flax/Optax.",
    packages=setuptools.find_packages(include=["sam_jax", "sam_jax.*", "configs"]),
    python_requires=">=3.11",
    install_requires=requirements,
)
