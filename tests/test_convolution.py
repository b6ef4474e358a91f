"""sam_jax/convolution.py: the canonical gradients (input and kernel) equal JAX's own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sam_jax import convolution


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 1), (1, 1)), ((0, 1), (0, 1))])
@pytest.mark.parametrize("kernel", [1, 3])
def test_gradients_equal_lax_in_a_loop_body(strides, padding, kernel):
  rng = np.random.default_rng(kernel)
  x = jnp.asarray(rng.standard_normal((4, 9, 9, 5)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, 5, 6)), jnp.float32)

  def loss(conv):
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, strides, padding,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))))

  expected = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
  with convolution.in_loop_body():
    got = jax.grad(loss(convolution.conv_general_dilated), (0, 1))(x, w)
    jaxpr = str(jax.make_jaxpr(loss(convolution.conv_general_dilated))(x, w))
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  assert "custom_vjp" in jaxpr  # the canonical gradient was used
  outside = str(jax.make_jaxpr(loss(convolution.conv_general_dilated))(x, w))
  assert "custom_vjp" not in outside  # and only in a loop body


def test_grouped_convolutions_are_lax_itself():
  x, w = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 1, 4))
  with convolution.in_loop_body():
    jaxpr = str(jax.make_jaxpr(lambda x, w: convolution.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=4))(x, w))
  assert "custom_vjp" not in jaxpr and "feature_group_count=4" in jaxpr
