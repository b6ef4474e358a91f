"""The variant registry: a new variant is its own code and one entry, and every part of a run
(validation, the optimizer, the host schedule, evaluation, the loop) reads that entry."""

import jax
import numpy as np
import pytest

import sam_jax
from conftest import tiny_config
from sam_jax import checkpoints, family, loop, replicas, run_setup, validation
from sam_jax.errors import UsageError
from sam_jax.family import chains, registry
from sam_jax.sam import SamState, find_state


def half_sam(c: registry.Chain):
  """The toy's transformation: SAM at half the radius, on every `toy_every`-th update."""
  return family.sometimes(sam_jax.sam(c.sam.rho / 2, aux_init=c.aux_init), every=c.sam.toy_every)


TOY = registry.Variant("a toy: SAM at half the radius on every toy_every-th update",
                       chains.in_front(half_sam),
                       fields={"toy_every": (lambda k: k > 0, "a positive number of updates")},
                       second_pass=lambda s: lambda t: (t + 1) % s.toy_every == 0)


def toy_config(**fields):
  config = tiny_config(dataset="digits", batch_size=64, num_epochs=1, log_every_steps=11,
                       sam=dict(variant="toy", rho=0.1), **fields)
  with config.unlocked():
    config.sam.toy_every = 3  # its own field, as configs/default.py would declare it
  return config


def test_an_unknown_variant_is_refused_naming_the_known_ones():
  with pytest.raises(UsageError, match=r"^Unknown SAM variant 'asam': choose one of sam, gsam, "):
    validation.check(tiny_config(sam=dict(variant="asam")))


@pytest.mark.slow
def test_a_new_variant_is_one_registry_entry(monkeypatch, digits, tmp_path):
  monkeypatch.setitem(registry.VARIANTS, "toy", TOY)
  bad = toy_config()
  bad.sam.toy_every = 0
  with pytest.raises(UsageError, match=r"toy_every=0 is out of range: sam.toy_every must be a "):
    validation.check(bad)  # its own field's range
  config = toy_config()
  run = run_setup.set_up(config, str(tmp_path / "set_up"))
  due = [t for t in range(9) if run.second_pass(t)]
  assert due == [2, 5, 8]  # its host schedule drives the loop's steps
  state, batches = run.state, run.train_batches(start_step=0)
  for t in range(9):
    state, metrics = run.train_step(state, replicas.shard_batch(next(batches), run.mesh), run.rng,
                                    sam_step=run.second_pass(t))
  # Its transformation, from its build, ran its second pass on exactly those updates.
  assert int(find_state(state.opt_state, SamState).count) == len(due)
  assert "perturbed_loss" in metrics  # its aux reaches the step's metrics
  results = loop.train_and_evaluate(config, str(tmp_path / "run"))  # end to end
  assert results["steps"] == 22 and np.isfinite(results["test_loss"])
  assert results["test_error"] < 0.5  # it trains: chance is 0.9


@pytest.mark.slow
@pytest.mark.parametrize(
    "sam, passes",
    [
        (dict(variant="fsam", perturbation_mask="norm", rho=0.5), 22),  # on SAM-ON's mask
        (dict(variant="vasso", late_phase=0.25), 6),  # the last 6 of 22 updates
        (dict(variant="bsam", rho=0.01), 22),  # the whole optimizer
        (dict(variant="sampa"), 22),  # on 2 replicas, the previous batch and the current
        (dict(variant="functional", every=2), 11),  # its second pass on every other update
    ])
def test_the_2023_25_variants_train_through_the_binary_on_the_digits(sam, passes, digits, tmp_path):
  alone = dict(weight_decay=0.0, gradient_clipping=0.0, learning_rate=0.5)  # bSAM's own
  config = tiny_config(dataset="digits", batch_size=64, num_epochs=1, log_every_steps=11,
                       sam=dict(rho=0.1) | sam, **(alone if sam["variant"] == "bsam" else {}))
  run = run_setup.set_up(config, str(tmp_path / "set_up"))
  assert sum(bool(run.second_pass(t)) for t in range(22)) in (0, passes)  # host-decided or all
  results = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["steps"] == 22 and results["test_error"] < 0.5  # it trains: chance is 0.9
  _, state = checkpoints.read(str(tmp_path / "run"), None, jax.eval_shape(lambda: run.state))
  assert int(find_state(state.opt_state, SamState).count) == passes  # its second passes
  if sam["variant"] == "bsam":  # the posterior's model average, 32 samples, at the end
    assert results["test_predictive_error"] < 0.5 and results["test_predictive_loss"] > 0
