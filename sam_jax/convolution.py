"""A 2-D convolution whose gradients are canonical convolutions, fast on XLA:CPU anywhere.

XLA:CPU runs the convolutions JAX derives for a gradient (batch and feature dimensions
swapped, kernels flipped) 25-40x slower inside a `lax.cond` branch or a loop body than
at the top of a program (jax-ml/jax#12868): there their layouts cannot be chosen freely.
LookSAM's and SAM every k's branches and the scan over virtual replicas (gradient
accumulation) put the gradient passes there. Here the gradients are written as
NHWC x HWIO -> NHWC convolutions of transposed operands, which XLA:CPU runs at full speed
in a loop body too (at the top of a program they are slower than XLA's own choice, so
they are used only inside `in_loop_body()`, on CPU):

    dW[a, b, i, o] = sum_{n, h, w} x_pad[n, s h + a, s w + b, i] dY[n, h, w, o]
                   = conv(lhs = x_pad as [i, H, W, n], rhs = dY as [h, w, n, o],
                          rhs dilation s)[i, a, b, o]
    dX = conv(dY dilated by s, padded by (k - 1 - lo, H - (H' - 1) s + lo - 1),
              W flipped in space as [kh, kw, o, i])      (H: x's height, H': dY's)

Anything else (groups, dilations, other layouts) is `lax.conv_general_dilated` itself.
"""

import contextlib
import contextvars
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
_IN_LOOP_BODY = contextvars.ContextVar("in_loop_body", default=False)


@contextlib.contextmanager
def in_loop_body():
  """While tracing a loop body (`replicas`' scan), convolutions use the canonical gradient."""
  token = _IN_LOOP_BODY.set(True)
  try:
    yield
  finally:
    _IN_LOOP_BODY.reset(token)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides, padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision: Any = None, preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated`, with the canonical kernel gradient where it applies."""
  plain = (not _IN_LOOP_BODY.get() or jax.default_backend() != "cpu"
           or lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1
           or any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
           or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           != lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
  if plain:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), precision,
               preferred_element_type)


def _forward(x, w, strides, padding, precision, preferred_element_type):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                  precision=precision,
                                  preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, padding, precision, preferred_element_type):
  return _forward(x, w, strides, padding, precision, preferred_element_type)


def _conv_fwd(x, w, strides, padding, precision, preferred_element_type):
  return _forward(x, w, strides, padding, precision, preferred_element_type), (x, w)


def _conv_bwd(strides, padding, precision, preferred_element_type, residuals, dy):
  x, w = residuals
  dx = _input_gradient(dy.astype(x.dtype), w, x.shape[1:3], strides, padding, precision)
  padded = jnp.pad(x, ((0, 0), *(tuple(max(p, 0) for p in pair) for pair in padding), (0, 0)))
  dw = lax.conv_general_dilated(
      jnp.transpose(padded, (3, 1, 2, 0)), jnp.transpose(dy.astype(x.dtype), (1, 2, 0, 3)),
      (1, 1), "VALID", rhs_dilation=strides, dimension_numbers=NHWC, precision=precision)
  dw = jnp.transpose(dw[:, :w.shape[0], :w.shape[1], :], (1, 2, 0, 3))
  return dx.astype(x.dtype), dw.astype(w.dtype)


def _input_gradient(dy, w, size, strides, padding, precision):
  """dx as a canonical NHWC x HWIO convolution: dy dilated by the stride, padded by
  k - 1 - lo before and whatever gives back the input's size after, correlated with the
  kernel flipped in space, I and O swapped."""
  pads = [(k - 1 - lo, n - (m - 1) * s + lo - 1)
          for k, n, m, s, (lo, _) in zip(w.shape[:2], size, dy.shape[1:3], strides, padding)]
  flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
  return lax.conv_general_dilated(dy, flipped, (1, 1), pads, lhs_dilation=strides,
                                  dimension_numbers=NHWC, precision=precision)


_conv.defvjp(_conv_fwd, _conv_bwd)
