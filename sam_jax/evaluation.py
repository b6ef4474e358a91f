"""Evaluation of a training run: when it is due, and the metrics over its splits.

The test split (and the training set with `also_eval_on_training_set`) is scored by
every process on its share of the examples, padded to the same number of batches; with
an EMA the metrics without prefix are the EMA model's, as the original reported.
"""

from typing import TYPE_CHECKING

import jax
import ml_collections
from absl import logging

from sam_jax import processes, replicas, steps
from sam_jax.family import unperturbed
from sam_jax.data import loading

if TYPE_CHECKING:
  from sam_jax import loop

EVALUATED = ("test_", "raw_test_", "train_eval_", "raw_train_eval_")  # its metrics' prefixes


def evaluation_due(config: ml_collections.ConfigDict, step: int, steps_per_epoch: int) -> bool:
  """Every `eval_every_steps` steps when set, else every `evaluate_every` epochs."""
  if config.eval_every_steps:
    return step % config.eval_every_steps == 0
  epoch, epoch_done = divmod(step, steps_per_epoch)
  return epoch_done == 0 and epoch % config.evaluate_every == 0


def evaluate(eval_step, state: steps.TrainState, batches, mesh) -> dict[str, float]:
  """Mean loss, error and top-5 error over every (unpadded) example of `batches`."""
  totals = None
  for batch in batches:
    sums = eval_step(state, replicas.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  totals = jax.tree.map(float, totals)
  count = totals.pop("count")
  return {**{name: value / count for name, value in totals.items()}, "count": count}


def evaluate_all(config: ml_collections.ConfigDict, run: "loop.SetUp", eval_step,
                 state: steps.TrainState, step: int, writer) -> dict[str, float]:
  """The test split (and the training set, if asked).

  With an EMA, the metrics without prefix are the EMA model's (what the original
  reported) and `raw_` ones the trained weights'.
  """
  splits = {"test": (run.data.eval, run.data.eval_steps)}
  if config.also_eval_on_training_set:
    train = loading.concatenate(run.data.train)
    count = processes.gather(loading.num_examples(train)).max()
    splits["train_eval"] = (train, -(-int(count) // run.process_batch))
  state = state.replace(params=unperturbed(state.params, state.opt_state))  # Momentum-SAM
  models = {"": state.replace(**state.ema), "raw_": state} if state.ema else {"": state}
  names = (("loss", "error") + (("top5_error",) if config.compute_top_5_error_rate else
                                ()) + (("smoothed_loss",) if config.label_smoothing else ()))
  results = {}
  for split, (examples, num_batches) in splits.items():
    for prefix, evaluated in models.items():
      batches = run.eval_batches(examples, num_batches=num_batches)
      metrics = evaluate(eval_step, evaluated, batches, run.mesh)
      results.update({f"{prefix}{split}_{name}": metrics[name] for name in names})
    results[f"{split}_examples"] = metrics["count"]  # examples scored: the split's size
  writer.write_scalars(step, results)
  shown = ", ".join(f"{k} {v:.4f}" for k, v in results.items() if not k.endswith("_examples"))
  logging.info("evaluation at step %d: %s (%d test examples)", step, shown,
               results["test_examples"])
  return results
