"""Evaluation of a training run: when it is due, and the metrics over its splits.

A `Plan` (built by `run_setup.set_up`) says what is scored and when. Each split is scored
by every process on its share of the examples, padded to the same number of batches;
with an EMA the metrics without prefix are the EMA model's, as the original reported.
"""

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
from absl import logging

from sam_jax import replicas, steps

EVALUATED = ("test_", "raw_test_", "train_eval_", "raw_train_eval_")  # its metrics' prefixes


@dataclasses.dataclass(frozen=True)
class Plan:
  """What evaluation scores, with which step, and when."""
  eval_step: Callable[..., dict[str, jax.Array]]  # steps.make_eval_step's
  mesh: jax.sharding.Mesh
  batches: Callable[..., Iterator[dict[str, Any]]]  # (examples, num_batches=) -> batches
  splits: dict[str, tuple[Any, int]]  # "test" (, "train_eval") -> (examples, batches)
  metrics: tuple[str, ...]  # of loss, error, top5_error, smoothed_loss
  evaluated: Callable[[Any, Any], Any]  # (params, opt_state) -> the params to score
  every_steps: int  # > 0: every this many steps, else every `every_epochs` epochs
  every_epochs: int
  steps_per_epoch: int
  # (state, global batch, key) -> summed predictive metrics (a posterior's model average,
  # `predictive.predictive_eval_step`), scored on the test split at the last step; None: none.
  predictive: Callable[..., dict[str, jax.Array]] | None = None

  def due(self, step: int) -> bool:
    """Every `every_steps` steps when set, else every `every_epochs` epochs."""
    if self.every_steps:
      return step % self.every_steps == 0
    epoch, epoch_done = divmod(step, self.steps_per_epoch)
    return epoch_done == 0 and epoch % self.every_epochs == 0


def evaluate(eval_step, state: steps.TrainState, batches, mesh) -> dict[str, float]:
  """Mean loss, error and top-5 error over every (unpadded) example of `batches`."""
  totals = None
  for batch in batches:
    sums = eval_step(state, replicas.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  totals = jax.tree.map(float, totals)
  count = totals.pop("count")
  return {**{name: value / count for name, value in totals.items()}, "count": count}


def evaluate_all(plan: Plan, state: steps.TrainState, step: int, writer,
                 last: bool = False) -> dict[str, float]:
  """Every split of the plan, written to `writer` at `step` and logged.

  With an EMA, the metrics without prefix are the EMA model's (what the original
  reported) and `raw_` ones the trained weights'. At the `last` step, the plan's
  predictive metrics too (`test_predictive_loss`, `test_predictive_error`).
  """
  predictive = {}
  if last and (predictive_step := plan.predictive) is not None:
    examples, num_batches = plan.splits["test"]
    batches = plan.batches(examples, num_batches=num_batches)
    keys = (jax.random.fold_in(jax.random.key(step), i) for i in range(num_batches))
    predictive = evaluate(lambda s, b: predictive_step(s, b, next(keys)), state, batches, plan.mesh)
    predictive = {f"test_{k}": v for k, v in predictive.items() if k != "count"}
  state = state.replace(params=plan.evaluated(state.params, state.opt_state))
  models = {"": state.replace(**state.ema), "raw_": state} if state.ema else {"": state}
  results = {}
  for split, (examples, num_batches) in plan.splits.items():
    for prefix, model in models.items():
      batches = plan.batches(examples, num_batches=num_batches)
      metrics = evaluate(plan.eval_step, model, batches, plan.mesh)
      results.update({f"{prefix}{split}_{name}": metrics[name] for name in plan.metrics})
    results[f"{split}_examples"] = metrics["count"]  # examples scored: the split's size
  results.update(predictive)
  writer.write_scalars(step, results)
  shown = ", ".join(f"{k} {v:.4f}" for k, v in results.items() if not k.endswith("_examples"))
  logging.info("evaluation at step %d: %s (%d test examples)", step, shown,
               results["test_examples"])
  return results
