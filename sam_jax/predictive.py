# pyright: strict, reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false, reportUnknownLambdaType=false
# pyright: reportMissingTypeStubs=false
"""The posterior predictive of a variant that learns a posterior (bSAM, `family.bayesian`): a
per-replica eval step that averages the predictions of posterior samples. Pure JAX."""

import functools
from collections.abc import Callable
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from sam_jax import replicas
from sam_jax.steps import TrainState


def predictive_eval_step(state: TrainState, batch: dict[str, jax.Array], key: jax.Array, *,
                         model: nn.Module, sample: Callable[[Any, Any, jax.Array], Any],
                         num_samples: int) -> dict[str, jax.Array]:
  """Sums over all replicas of the posterior predictive's error and negative log-likelihood.

  p(y | x) = (1/K) sum_k softmax(f(x; theta_k)), theta_k = sample(params, opt_state,
  fold_in(key, k)): the Bayesian model average of bSAM, as team-approx-bayes/bayesian-sam
  test.py:102-120 (K = its testmc, 32). The K samples run one after another (`lax.map`).
  """
  def log_probabilities(k: jax.Array) -> jax.Array:
    theta = sample(state.params, state.opt_state, jax.random.fold_in(key, k))
    logits = model.apply({
        "params": theta,
        "batch_stats": state.batch_stats
    }, batch["image"], train=False)
    return jax.nn.log_softmax(cast(jax.Array, logits).astype(jnp.float32))

  log_p = jax.lax.map(log_probabilities, jnp.arange(num_samples))
  average = jax.nn.logsumexp(log_p, axis=0) - jnp.log(num_samples)
  mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
  sums = {
      "predictive_loss": -jnp.sum(
          jnp.take_along_axis(average, batch["label"][:, None], -1)[:, 0] * mask),
      "predictive_error": jnp.sum((jnp.argmax(average, -1) != batch["label"]) * mask),
      "count": jnp.sum(mask),
  }
  return jax.lax.psum(sums, replicas.REPLICA_AXES)


def make_predictive_eval_step(model: nn.Module, mesh: Mesh, sample: Callable[..., Any],
                              num_samples: int) -> Callable[..., dict[str, jax.Array]]:
  """The jitted global `predictive_eval_step`: (state, global batch, key) -> summed metrics."""
  step = functools.partial(predictive_eval_step, model=model, sample=sample,
                           num_samples=num_samples)
  return replicas.map_replicas(step, mesh)
