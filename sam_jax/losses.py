"""The classification losses and errors of a batch's logits: pure JAX and optax."""

import jax
import jax.numpy as jnp
import optax

LOSSES = ("softmax", "sigmoid")


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0,
                  kind: str = "softmax") -> jax.Array:
  """Per-example cross-entropy against targets t smoothed towards uniform.

  softmax: -sum_k t_k log softmax(z)_k; sigmoid: every class a binary problem,
  -sum_k [t_k log sigmoid(z_k) + (1 - t_k) log sigmoid(-z_k)] (big_vision's sigmoid_xent,
  utils.py:236-243, the ViT recipes' loss). `labels` are class indices [n] or, after
  mixup, soft targets [n, classes].
  """
  targets = labels if labels.ndim == logits.ndim else jax.nn.one_hot(labels, logits.shape[-1])
  targets = optax.smooth_labels(targets, label_smoothing)
  if kind == "sigmoid":
    return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
  return optax.softmax_cross_entropy(logits, targets)


def hard_labels(labels: jax.Array) -> jax.Array:
  """Class indices; soft (mixup) targets count as their larger class."""
  return jnp.argmax(labels, -1) if labels.ndim == 2 else labels


def error_rate(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The fraction of examples whose top class is not the (hard) label."""
  return jnp.mean(jnp.argmax(logits, -1) != hard_labels(labels))
