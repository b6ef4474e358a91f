"""sam_jax/convolution.py: the canonical gradients and the patches' matmul equal JAX's own;
sam_jax/xla_cpu.py: the CPU flags."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sam_jax import convolution, xla_cpu


@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 1), (1, 1)), ((0, 1), (0, 1))])
@pytest.mark.parametrize("kernel", [1, 3])
def test_gradients_equal_lax_in_a_loop_body_and_outside(strides, padding, kernel):
  rng = np.random.default_rng(kernel)
  x = jnp.asarray(rng.standard_normal((4, 9, 9, 5)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, 5, 6)), jnp.float32)

  def loss(conv):
    return lambda x, w: jnp.sum(
        jnp.sin(conv(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))))

  expected = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
  with convolution.in_loop_body():
    inside = jax.grad(loss(convolution.conv_general_dilated), (0, 1))(x, w)
    jaxpr = str(jax.make_jaxpr(loss(convolution.conv_general_dilated))(x, w))
  outside = jax.grad(loss(convolution.conv_general_dilated), (0, 1))(x, w)
  for a, b in zip(inside + outside, expected + expected):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  assert "custom_vjp" in jaxpr  # the canonical gradients were used in a loop body
  top = str(jax.make_jaxpr(loss(convolution.conv_general_dilated))(x, w))
  assert ("custom_vjp" in top) == (strides != (1, 1))  # and outside, for strides only


@pytest.mark.parametrize("strides, padding", [((1, 1), "SAME"), ((2, 1), ((1, 1), (2, 0)))])
def test_kernels_larger_than_the_image_are_a_matmul_of_patches(strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 2, 2, 4)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.float32)

  def loss(conv):
    return lambda x, w: jnp.sum(
        jnp.sin(conv(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))))

  expected = jax.value_and_grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
  for context in (contextlib.nullcontext, convolution.in_loop_body):
    with context():
      got = jax.value_and_grad(loss(convolution.conv_general_dilated), (0, 1))(x, w)
      jaxpr = str(jax.make_jaxpr(loss(convolution.conv_general_dilated))(x, w))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr


def test_grouped_convolutions_are_lax_itself():
  x, w = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 1, 4))
  with convolution.in_loop_body():
    jaxpr = str(
        jax.make_jaxpr(lambda x, w: convolution.conv_general_dilated(
            x, w,
            (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4))(x,
                                                                                                w))
  assert "custom_vjp" not in jaxpr and "feature_group_count=4" in jaxpr


def test_cpu_flags_are_added_unless_the_user_set_them():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  xla_cpu.set_defaults(environ)
  assert environ["XLA_FLAGS"].split() == [
      "--xla_force_host_platform_device_count=2", *xla_cpu.FLAGS
  ]
  mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
  xla_cpu.set_defaults(mine)
  assert mine == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
  empty = {}
  xla_cpu.set_defaults(empty)
  assert empty["XLA_FLAGS"] == " ".join(xla_cpu.FLAGS)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's choice")
def test_convolutions_are_xla_own_and_reductions_ynnpack():
  """Without the flag, jaxlib 0.10 compiles this convolution into a YNNPACK fusion."""
  x, w = jnp.ones((8, 16, 16, 64)), jnp.ones((3, 3, 64, 64))
  conv = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=(
      "NHWC", "HWIO", "NHWC")))
  assert "__ynn_fusion" not in conv.lower(x, w).compile().as_text()
  total = jax.jit(lambda x: jnp.sum(x, (0, 1, 2)))
  assert "__ynn_fusion" in total.lower(x).compile().as_text()
