# pyright: strict, reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false, reportUnknownLambdaType=false
# pyright: reportMissingTypeStubs=false
"""Which parameters a SAM transformation touches: masks over a parameter tree.

Pure JAX: `not_bias` (ASAM's default scaling mask), `normalization_layers` (SAM-ON's
perturbation mask) and `masked`, which zeroes a tree outside a mask.
"""

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


def entry_name(entry: Any) -> str:
  """The name of one step of a tree path (a dict key or an attribute)."""
  return str(getattr(entry, "key", getattr(entry, "name", entry)))


def not_bias(params: optax.Params) -> Any:
  """Default ASAM mask: True for every leaf except those named 'bias'.

  In Flax, 'bias' names both the biases of conv/dense layers and BatchNorm's beta,
  so this matches the official ASAM code, which rescales only "weight" tensors
  (kernels and BatchNorm scale) and leaves biases with T = 1.
  """
  def is_weight(path: tuple[Any, ...], _: Any) -> bool:
    return entry_name(path[-1]) != "bias"

  return jax.tree_util.tree_map_with_path(is_weight, params)


def normalization_layers(params: optax.Params) -> Any:
  """SAM-ON's mask (Mueller et al., NeurIPS 2023): True for the scale and bias of every
  normalization layer, i.e. of each module whose name says norm or bn (BatchNorm_3,
  LayerNorm_0, encoder_norm, stem_bn, bn_1_pre, ...), False elsewhere; the authors' code
  also picks the parameters by name ("norm" or "bn" in it, mueller-mp/SAM-ON
  sam_on.py:26)."""
  def is_norm(path: tuple[Any, ...], _: Any) -> bool:
    *_, module, leaf = ("", "", *(entry_name(entry) for entry in path))
    return (leaf in ("scale", "bias")
            and re.search(r"norm|(^|_)bn(_|$|\d)", module.lower()) is not None)

  return jax.tree_util.tree_map_with_path(is_norm, params)


def masked(tree: Any, mask: Any | Callable[[Any], Any] | None, like: Any = None) -> Any:
  """`tree` with zeros where `mask` (a pytree of bools, or a function of `like` giving one;
  None: everywhere True) is False."""
  if mask is None:
    return tree
  mask = mask(tree if like is None else like) if callable(mask) else mask
  return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), tree, mask)
