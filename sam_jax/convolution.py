"""A 2-D convolution whose kernel gradient is a canonical convolution, fast on XLA:CPU anywhere.

XLA:CPU runs the kernel-gradient convolution JAX derives (batch and feature dimensions
swapped) about 40x slower inside a `lax.cond` branch or a loop body than at the top of a
program (jax-ml/jax#12868): there its layouts cannot be chosen freely. LookSAM's and SAM
every k's branches and the scan over virtual replicas (gradient accumulation) put the
gradient passes there. Here the kernel gradient is written as an NHWC x HWIO -> NHWC
convolution of transposed operands, which XLA:CPU runs at full speed in a loop body too
(at the top of a program it is slower than XLA's own choice, so it is used only inside
`in_loop_body()`, on CPU):

    dW[a, b, i, o] = sum_{n, h, w} x_pad[n, s h + a, s w + b, i] dY[n, h, w, o]
                   = conv(lhs = x_pad as [i, H, W, n], rhs = dY as [h, w, n, o],
                          rhs dilation s)[i, a, b, o]

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
  dx, = jax.linear_transpose(
      lambda x: _forward(x, w, strides, padding, precision, preferred_element_type),
      x)(dy)
  padded = jnp.pad(x, ((0, 0), *(tuple(max(p, 0) for p in pair) for pair in padding), (0, 0)))
  dw = lax.conv_general_dilated(
      jnp.transpose(padded, (3, 1, 2, 0)), jnp.transpose(dy.astype(x.dtype), (1, 2, 0, 3)),
      (1, 1), "VALID", rhs_dilation=strides, dimension_numbers=NHWC, precision=precision)
  dw = jnp.transpose(dw[:, :w.shape[0], :w.shape[1], :], (1, 2, 0, 3))
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)
