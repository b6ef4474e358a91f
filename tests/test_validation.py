"""Config validation (sam_jax/validation.py): every ranged field refuses the value just past
its range with one line naming it, and accepts the value at its edge."""

import math

import pytest

from conftest import tiny_config
from sam_jax import validation
from sam_jax.errors import UsageError
from sam_jax.family import registry


def below(x):
  return math.nextafter(x, -math.inf)


def above(x):
  return math.nextafter(x, math.inf)


TINY = above(0.0)  # the smallest positive float
# field: ([the values just past each end of its range], [the values at its ends: fine]).
EDGES = {
    "image_size": ([0], [1, None]),
    "num_epochs": ([0], [1]),
    "num_train_steps": ([0], [1, None]),
    "batch_size": ([0], [1]),
    "cutout_length": ([-1], [0]),
    "mixup_alpha": ([0.0], [TINY]),
    "randaug_num_layers": ([-1], [0]),
    "randaug_magnitude": ([-1], [0]),
    "label_noise": ([below(0.0), above(1.0)], [0.0, 1.0]),
    "data_shards": ([0], [1, None]),
    "shuffle_buffer": ([0], [1, None]),
    "learning_rate": ([0.0], [TINY]),
    "warmup_epochs": ([below(0.0)], [0.0]),
    "warmup_steps": ([-1], [0, None]),
    "dropout_rate": ([below(0.0), 1.0], [0.0, below(1.0), None]),
    "momentum": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "linear_end": ([below(0.0), above(1.0)], [0.0, 1.0]),
    "adam_beta1": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "adam_beta2": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "adam_eps": ([0.0], [TINY]),
    "lion_beta1": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "lion_beta2": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "weight_decay": ([below(0.0)], [0.0]),
    "gradient_clipping": ([below(0.0)], [0.0]),
    "label_smoothing": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "ema_decay": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "ema_warmup_steps": ([-1], [0]),
    "sam.rho": ([below(0.0)], [0.0]),
    "sam.m": ([0], [1, None]),
    "sam.sync_group_size": ([0], [1, None]),
    "sam.eta": ([below(0.0)], [0.0]),
    "sam.p": ([below(1.0), math.nan], [1.0, math.inf]),
    "sam.every": ([0], [1]),
    "sam.probability": ([0.0, above(1.0)], [TINY, 1.0]),
    "sam.late_phase": ([0.0, above(1.0)], [TINY, 1.0]),
    "sam.fsam_sigma": ([below(0.0)], [0.0]),
    "sam.fsam_lambda": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "sam.vasso_theta": ([0.0, above(1.0)], [TINY, 1.0]),
    "sam.gsam_alpha": ([below(0.0)], [0.0]),
    "sam.gsam_rho_min": ([below(0.0)], [0.0, None]),
    "sam.looksam_every": ([0], [1]),
    "sam.looksam_alpha": ([below(0.0)], [0.0]),
    "sam.esam_beta": ([0.0, above(1.0)], [TINY, 1.0]),
    "sam.esam_gamma": ([0.0, above(1.0)], [TINY, 1.0]),
    "sam.wsam_gamma": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "sam.sampa_lambda": ([below(0.0), above(1.0)], [0.0, 1.0]),
    "sam.bsam_beta1": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "sam.bsam_beta2": ([below(0.0), 1.0], [0.0, below(1.0)]),
    "sam.bsam_prior_precision": ([below(0.0)], [0.0]),
    "sam.bsam_data_factor": ([0.0], [TINY]),
    "sam.bsam_init_precision": ([0.0], [TINY]),
    "sam.bsam_damping": ([below(0.0)], [0.0]),
    "sam.bsam_predictive_samples": ([-1], [0]),
    "init_seed": ([-1], [0, None]),
    "log_every_steps": ([0], [1]),
    "profile_steps": ([-1], [0]),
    "evaluate_every": ([0], [1]),
    "eval_every_steps": ([-1], [0]),
    "save_progress_seconds": ([-1], [0]),
    "keep_checkpoints": ([0], [1]),
    "additional_checkpoints_at_epochs": ([(0,), (2, 0)], [(1,), ()]),
}


def with_value(field: str, value):
  config = tiny_config()
  *parents, name = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value
  return config


def test_every_ranged_field_is_covered_here():
  assert set(EDGES) == set(validation.RANGES) | set(registry.field_ranges())


@pytest.mark.parametrize("field", sorted(EDGES))
def test_a_value_just_past_either_end_is_one_line_naming_the_field(field):
  bad_values, edges = EDGES[field]
  for bad in bad_values:
    with pytest.raises(UsageError, match=rf"^--config\.{field}=.* is out of range: {field} "
                       r"must be ") as error:
      validation.check(with_value(field, bad))
    assert "\n" not in str(error.value)
  for edge in edges:
    validation.check(with_value(field, edge))


@pytest.mark.parametrize("field", sorted(validation.CHOICES))
def test_a_value_outside_the_choices_lists_them(field):
  with pytest.raises(UsageError, match=rf"^Unknown {field} 'nonsense': choose one of "):
    validation.check(with_value(field, "nonsense"))
  for choice in validation.CHOICES[field]:
    config = with_value(field, choice)
    config.model_name = "ViT-mini_2" if field == "classifier" else config.model_name
    validation.check(config)


def test_warmup_must_leave_epochs_and_model_names_are_checked():
  with pytest.raises(UsageError, match=r"warmup_epochs=2.0 leaves nothing of the 2 epochs"):
    validation.check(with_value("warmup_epochs", 2.0))
  validation.check(tiny_config(warmup_epochs=2.0, num_train_steps=10))  # steps, not epochs
  with pytest.raises(UsageError, match="Unknown model 'WideResnet29x10'"):
    validation.check(tiny_config(model_name="WideResnet29x10"))


@pytest.mark.parametrize("variant", sorted(registry.VARIANTS))
def test_a_shared_option_a_variant_ignores_is_refused_naming_those_that_take_it(variant):
  entry = registry.VARIANTS[variant]
  for option, on in {
      "adaptive": True,
      "p": 1.5,
      "sync_perturbations": True,
      "every": 2,
      "probability": 0.5
  }.items():
    config = with_value(f"sam.{option}", on)
    config.sam.variant, config.sam.wsam_decoupled = variant, False  # coupled WSAM can skip
    if option in entry.takes:
      validation.check(config)
      continue
    takers = ", ".join(name for name, v in registry.VARIANTS.items() if option in v.takes)
    with pytest.raises(
        UsageError, match=rf"^--config.sam.{option}={on} is not an option of "
        rf"{variant} \(.*\): leave it at .*, or choose a variant that takes it "
        rf"\({takers}\)\.$"):
      validation.check(config)
  config = with_value("sam.variant", "wsam")  # decoupled: a sharpness step at every update
  config.sam.every = 5
  with pytest.raises(UsageError, match="^Decoupled WSAM runs its sharpness step at every"):
    validation.check(config)
  config.sam.wsam_decoupled = False
  validation.check(config)


def test_bsam_is_the_whole_optimizer_and_refuses_the_base_optimizers_decay_and_clipping():
  config = tiny_config(sam=dict(variant="bsam"), optimizer="adamw", weight_decay=0.0)
  with pytest.raises(
      UsageError, match=r"^bSAM is the whole optimizer .*: set "
      r"--config.optimizer=sgd --config.gradient_clipping=0\.$"):
    validation.check(config)
  config.optimizer, config.gradient_clipping = "sgd", 0.0
  validation.check(config)


def test_transformer_options_are_refused_on_other_models():
  with pytest.raises(
      UsageError, match=r"^--config.classifier applies to ViT models, not "
      r"Mixer-mini_2: leave it unset\.$"):
    validation.check(tiny_config(model_name="Mixer-mini_2", classifier="gap"))
  with pytest.raises(
      UsageError, match=r"^--config.head_bias_init applies to ViT and Mixer "
      r"models, not WideResnet10x1: leave it at 0\.$"):
    validation.check(tiny_config(model_name="WideResnet10x1", head_bias_init=-10.0))
  validation.check(tiny_config(model_name="Mixer-mini_2", head_bias_init=-10.0))


def test_losses_are_the_ones_the_step_knows():
  from sam_jax import losses  # JAX: only here
  assert validation.CHOICES["loss"] == losses.LOSSES


def test_resize_methods_are_the_ones_the_pipeline_knows():
  from sam_jax.data import image_ops  # TensorFlow: only here
  assert validation.CHOICES["resize_method"] == image_ops.RESIZE_METHODS


def test_replica_mappings_are_the_ones_replicas_knows():
  from sam_jax import replicas  # JAX: only here, validation itself must not load it
  assert validation.CHOICES["replica_mapping"] == ("auto", *replicas.MAPPINGS)


@pytest.mark.parametrize("backend, dtype, mapping", [("cpu", "float32", "loop"),
                                                     ("gpu", "bfloat16", "vmap"),
                                                     ("tpu", "bfloat16", "vmap")])
def test_auto_dtype_and_mapping_follow_the_backend(monkeypatch, backend, dtype, mapping):
  import jax  # pylint: disable=import-outside-toplevel
  from sam_jax import replicas, run_setup  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  config = tiny_config()
  assert (config.dtype, config.replica_mapping) == ("float32", "auto")  # the defaults
  assert run_setup.compute_dtype(config).name == "float32"  # on any backend
  config.dtype = "auto"  # the option for new work
  assert run_setup.compute_dtype(config).name == dtype
  assert replicas.resolve_mapping(config.replica_mapping, config.sync_batch_norm) == mapping
  config.dtype, config.replica_mapping = "float32", "scan"  # the switches back
  assert run_setup.compute_dtype(config).name == "float32"
  assert replicas.resolve_mapping(config.replica_mapping, config.sync_batch_norm) == "scan"
  config.sync_batch_norm = True  # needs every replica at once
  assert replicas.resolve_mapping(config.replica_mapping, config.sync_batch_norm) == "vmap"
