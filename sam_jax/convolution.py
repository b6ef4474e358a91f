"""A 2-D convolution whose gradients are canonical convolutions where XLA:CPU's are slow.

XLA:CPU runs the convolutions JAX derives for a gradient (batch and feature dimensions
swapped, kernels flipped) 35-50x slower inside a loop body or a `lax.cond` branch than
at the top of a program (`scripts/benchmark_nested_convolutions.py`; jax-ml/jax#12868):
there their layouts cannot be chosen freely.
LookSAM's and SAM every k's branches and the scan over virtual replicas (gradient
accumulation) put the gradient passes there. Here the gradients are written as
NHWC x HWIO -> NHWC convolutions of transposed operands, which XLA:CPU runs at full speed
in a loop body too:

    dW[a, b, i, o] = sum_{n, h, w} x_pad[n, s h + a, s w + b, i] dY[n, h, w, o]
                   = conv(lhs = x_pad as [i, H, W, n], rhs = dY as [h, w, n, o],
                          rhs dilation s)[i, a, b, o]
    dX[n, s j + p, s l + q] = conv(dY, the taps of W that reach phase (p, q),
                                   flipped in space as [kh, kw, o, i])[n, j, l]

On CPU, inside `in_loop_body()` both are used; at the top of a program the kernel
gradient is XLA's own (faster there) and the input gradient is this one for strided
convolutions only: JAX's multiplies a dY dilated by zeros, 1.5-2.2x slower on WRN-16-4's
shapes (`scripts/benchmark_step.py`). A kernel larger than the image is one matmul of the
image's patches, everywhere on CPU (`_patches_conv`). Anything else (groups, dilations,
other layouts, other backends) is `lax.conv_general_dilated` itself.
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


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated`, with the canonical gradients where they are faster."""
  in_loop_body_ = _IN_LOOP_BODY.get()
  kernel_larger = any(k > n for k, n in zip(rhs.shape[:2], lhs.shape[1:3]))
  ours = in_loop_body_ or kernel_larger or any(s != 1 for s in window_strides)
  plain = (not ours or jax.default_backend() != "cpu" or lhs.ndim != 4 or feature_group_count != 1
           or batch_group_count != 1
           or any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
           or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           != lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
  if plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count,
                                    precision, preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  if kernel_larger:
    return _patches_conv(lhs, rhs, tuple(window_strides), padding, precision,
                         preferred_element_type)
  return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), precision,
               preferred_element_type, in_loop_body_)


def _patches_conv(x, w, strides, padding, precision, preferred_element_type):
  """The convolution as one matmul of x's k*k shifted copies (its patches) by w.

  For a kernel larger than the image (WRN-10-2's 3x3 convs on the 2x2 maps of 8x8 digits),
  XLA:CPU swaps the operands' roles and runs 7-20x slower than this; its gradients are
  the slices' and the matmul's.
  """
  padded = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), *((*p, 0) for p in padding), (0, 0, 0)))
  out = [(n - k) // s + 1 for n, k, s in zip(padded.shape[1:3], w.shape[:2], strides)]
  patches = jnp.concatenate([
      padded[:, a:a + (out[0] - 1) * strides[0] + 1:strides[0], b:b +
             (out[1] - 1) * strides[1] + 1:strides[1]]
      for a in range(w.shape[0])
      for b in range(w.shape[1])
  ], axis=-1)
  return jnp.einsum("nhwk,ko->nhwo", patches, w.reshape(-1, w.shape[-1]), precision=precision,
                    preferred_element_type=preferred_element_type)


def _forward(x, w, strides, padding, precision, preferred_element_type):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                  precision=precision,
                                  preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv(x, w, strides, padding, precision, preferred_element_type, canonical_kernel_gradient):
  del canonical_kernel_gradient  # the backward pass's choice
  return _forward(x, w, strides, padding, precision, preferred_element_type)


def _conv_fwd(x, w, strides, padding, precision, preferred_element_type, canonical):
  del canonical
  return _forward(x, w, strides, padding, precision, preferred_element_type), (x, w)


def _conv_bwd(strides, padding, precision, preferred_element_type, canonical, residuals, dy):
  x, w = residuals
  dy = dy.astype(x.dtype)
  dx = _input_gradient(dy, w, x.shape[1:3], strides, padding, precision)
  if canonical:
    dw = _kernel_gradient(x, dy, w.shape[:2], strides, padding, precision)
  else:  # XLA's own, which is faster at the top of a program
    dw = jax.vjp(lambda w: _forward(x, w, strides, padding, precision, None), w)[1](dy)[0]
  return dx.astype(x.dtype), dw.astype(w.dtype)


def _kernel_gradient(x, dy, kernel_size, strides, padding, precision):
  """dw as one canonical convolution: x as [i, H, W, n] by dy as [h, w, n, o]."""
  padded = jnp.pad(x, ((0, 0), *(tuple(max(p, 0) for p in pair) for pair in padding), (0, 0)))
  dw = lax.conv_general_dilated(
      jnp.transpose(padded, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)), (1, 1), "VALID",
      rhs_dilation=strides, dimension_numbers=NHWC, precision=precision)
  return jnp.transpose(dw[:, :kernel_size[0], :kernel_size[1], :], (1, 2, 0, 3))


def _input_gradient(dy, w, size, strides, padding, precision):
  """dx as one canonical stride-1 convolution per output phase, interleaved.

  Along an axis (kernel k, stride s, padding lo, x's size H, dy's H'), the rows
  i = s j + p of dx (phase p < s) take only the taps a = a0 + s t, a0 = (p + lo) mod s:
      dx_p[j] = sum_t dy[j + c - t] w[a0 + s t]^T,    c = (p + lo - a0) / s,
  a correlation of dy with those T taps flipped (I and O swapped), padded by T - 1 - c.
  For s = 1 that is the usual transposed convolution; for s > 1 it skips the zeros a
  dilated dy would multiply (XLA:CPU's lhs-dilated convolutions are 3-4x slower).
  """
  axes = [_phase_axis(*args) for args in zip(w.shape[:2], strides, padding, size, dy.shape[1:3])]
  rows = []
  for p, (a0_h, pad_h, taps_h) in enumerate(axes[0]):
    row = []
    for q, (a0_w, pad_w, taps_w) in enumerate(axes[1]):
      shape = (dy.shape[0], -(-(size[0] - p) // strides[0]), -(-(size[1] - q) // strides[1]),
               w.shape[2])
      if not (taps_h and taps_w):
        row.append(jnp.zeros(shape, dy.dtype))
        continue
      kernel = jnp.transpose(w[a0_h::strides[0], a0_w::strides[1]][::-1, ::-1], (0, 1, 3, 2))
      # Padded (or cropped) by lax.pad: XLA:CPU's convolution mishandles a negative
      # padding on one side with a positive one on the other.
      padded = lax.pad(dy, jnp.zeros((), dy.dtype),
                       ((0, 0, 0), (*pad_h, 0), (*pad_w, 0), (0, 0, 0)))
      row.append(
          lax.conv_general_dilated(padded, kernel, (1, 1), "VALID", dimension_numbers=NHWC,
                                   precision=precision))
    rows.append(row)
  return _interleave(rows, size)


def _phase_axis(k, s, pad, n, m):
  """Per phase p of one axis: (first tap a0, padding of dy, number of taps)."""
  phases = []
  for p in range(s):
    a0, count = (p + pad[0]) % s, -(-(n - p) // s)
    taps = len(range(a0, k, s))
    before = taps - 1 - (p + pad[0] - a0) // s
    phases.append((a0, (before, count - m - before + taps - 1), taps))
  return phases


def _interleave(rows, size):
  """dx[n, s_h j + p, s_w l + q] = rows[p][q][n, j, l], cropped to `size`."""
  if len(rows) == 1 and len(rows[0]) == 1:
    return rows[0][0]
  height, width = rows[0][0].shape[1:3]
  padded = [[
      jnp.pad(x, ((0, 0), (0, height - x.shape[1]), (0, width - x.shape[2]), (0, 0))) for x in row
  ] for row in rows]
  stacked = jnp.stack([jnp.stack(row) for row in padded])  # [s_h, s_w, N, H/s_h, W/s_w, C]
  batch, channels = stacked.shape[2], stacked.shape[-1]
  dx = jnp.transpose(stacked, (2, 3, 0, 4, 1, 5)).reshape(batch, height * len(rows),
                                                          width * len(rows[0]), channels)
  return dx[:, :size[0], :size[1]]


_conv.defvjp(_conv_fwd, _conv_bwd)
