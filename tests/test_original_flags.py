"""The original flags train what the official binary trained: its defaults, its code's choices.

Every row quotes a `flags.DEFINE_*` line of google-research/sam at HEAD dae9904 (paths under
its sam_jax/): the flag, where it is defined, its official default, and the config field
(with its value) that this default becomes here.
"""

import re

import jax
import jax.numpy as jnp
import pytest
from absl import flags

from conftest import parse_run
from sam_jax import original_flags, run_setup, train
from sam_jax.data.datasets import get_dataset_info
from sam_jax.errors import UsageError

# yapf: disable  (one row per DEFINE, as the official files list them)
OFFICIAL_DEFAULTS = {
    # flag: (defined at, official default, our field, its value)
    "dataset": ("train.py:35", "cifar10", "dataset", "cifar10"),
    "model_name": ("train.py:40", "WideResnet28x10", "model_name", "WideResnet28x10"),
    "num_epochs": ("train.py:44", 200, "num_epochs", 200),
    "batch_size": ("train.py:46", 128, "batch_size", 128),
    "output_dir": ("train.py:51", "", None, None),  # here: required (or --workdir)
    "image_level_augmentations": ("train.py:54", "basic", "image_level_augmentations", "basic"),
    "batch_level_augmentations": ("train.py:64", "none", "batch_level_augmentations", "none"),
    "gradient_clipping": ("training_utils/flax_training.py:45", 5.0, "gradient_clipping", 5.0),
    "learning_rate": ("training_utils/flax_training.py:46", 0.1, "learning_rate", 0.1),
    "use_learning_rate_schedule": ("training_utils/flax_training.py:47", True,
                                   "use_learning_rate_schedule", True),
    "weight_decay": ("training_utils/flax_training.py:51", 0.001, "weight_decay", 0.001),
    "run_seed": ("training_utils/flax_training.py:52", 0, "seed", 0),
    "use_rmsprop": ("training_utils/flax_training.py:56", False, "optimizer", "sgd"),
    "lr_schedule": ("training_utils/flax_training.py:57", "cosine", "lr_schedule", "cosine"),
    "save_progress_seconds": ("training_utils/flax_training.py:61", 3600,
                              "save_progress_seconds", 3600),
    "additional_checkpoints_at_epochs": ("training_utils/flax_training.py:62", [],
                                         "additional_checkpoints_at_epochs", ()),
    "also_eval_on_training_set": ("training_utils/flax_training.py:67", False,
                                  "also_eval_on_training_set", False),
    "compute_top_5_error_rate": ("training_utils/flax_training.py:70", False,
                                 "compute_top_5_error_rate", False),
    "label_smoothing": ("training_utils/flax_training.py:72", 0.0, "label_smoothing", 0.0),
    "ema_decay": ("training_utils/flax_training.py:73", 0.0, "ema_decay", 0.0),
    "no_weight_decay_on_bn": ("training_utils/flax_training.py:74", False,
                              "no_weight_decay_on_bn", False),
    "evaluate_every": ("training_utils/flax_training.py:77", 1, "evaluate_every", 1),
    "sam_rho": ("training_utils/flax_training.py:81", 0.0, "sam.rho", 0.0),  # SGD
    "sync_perturbations": ("training_utils/flax_training.py:84", False,
                           "sam.sync_perturbations", False),
    "inner_group_size": ("training_utils/flax_training.py:87", None, "sam.sync_group_size", None),
    "use_test_set": ("datasets/dataset_source.py:31", True, "use_test_set", True),
    "cutout_length": ("datasets/augmentation.py:28", 16, "cutout_length", 16),
    "randaug_num_layers": ("datasets/dataset_source_imagenet.py:36", 2, "randaug_num_layers", 2),
    "randaug_magnitude": ("datasets/dataset_source_imagenet.py:40", 9, "randaug_magnitude", 9),
    # 0: no mixup (dataset_source_imagenet.py:319).
    "imagenet_mixup_alpha": ("datasets/dataset_source_imagenet.py:42", 0.0,
                             "batch_level_augmentations", "none"),
    "use_additional_skip_connections": ("models/wide_resnet.py:58", False,
                                        "use_additional_skip_connections", False),
    # False: no checkpoint read, BatchNorm statistics trained (efficientnet.py:312).
    "from_pretrained_checkpoint": ("imagenet_models/load_model.py:32", False,
                                   "freeze_batch_norm", False),
    "efficientnet_checkpoint_path": ("imagenet_models/load_model.py:35", None, "init_from", None),
}
# What the official code did beyond its flags: (where, our field, its value).
OFFICIAL_CODE = [
    ("no dtype in any flax.nn layer; imagenet_models/resnet.py:77", "dtype", "float32"),
    ("train.py:77-84: jax.random.bernoulli -> lax.rng_uniform, a new draw per pass",
     "sam.redraw_masks", True),
    ("autoaugment/autoaugment.py, op for op", "autoaugment_faithful", True),
    ("datasets/dataset_source.py:67, dataset_source_imagenet.py:107", "resize_method",
     "bicubic_tf1"),
    ("datasets/dataset_source.py:116: self._train_ds.shuffle(50000)", "shuffle_buffer", 50_000),
    ("models/load_model.py:116, imagenet_models/load_model.py:131: PRNGKey(0)", "init_seed", 0),
    ("one replica per device (train.py:101-103)", "sam.m", None),
]
# yapf: enable


def field(config, name):
  for part in name.split("."):
    config = config[part]
  return config


def test_every_original_flag_has_a_row():
  assert set(OFFICIAL_DEFAULTS) == set(original_flags.ORIGINAL_FLAGS)


@pytest.mark.parametrize(
    "argv",
    [
        ["--output_dir=/tmp/w"],
        ["--dataset", "cifar10", "--model_name", "WideResnet28x10", "--output_dir", "/tmp/w"],
        ["--workdir=/tmp/w", "--nouse_rmsprop"],  # a negated boolean counts too
    ])
def test_unset_original_flags_take_the_official_defaults(argv, monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # what an accelerator resolves
  config, workdir = parse_run(argv)
  assert workdir == "/tmp/w"
  for flag, (where, _, name, value) in OFFICIAL_DEFAULTS.items():
    if name is not None:
      assert field(config, name) == value, (flag, where)
  for where, name, value in OFFICIAL_CODE:
    assert field(config, name) == value, where
  model = run_setup.build_model(config, get_dataset_info(config.dataset).num_classes)
  assert model.dtype == jnp.float32  # on a GPU too


def test_set_original_flags_win_and_a_config_file_is_kept():
  config, _ = parse_run(["--output_dir=/tmp/w", "--sam_rho=0.05", "--run_seed=3"])
  assert (config.sam.rho, config.seed, config.init_seed) == (0.05, 3, 0)  # PRNGKey(0) init
  config, _ = parse_run(["--output_dir=/tmp/w", "--use_test_set", "false"])
  assert not config.use_test_set
  # With --config=FILE the original flags override FILE's fields and nothing else.
  config, _ = parse_run(
      ["--config=configs/table1_shake_shake.py:cifar100,aa,sam", "--run_seed=3", "--workdir=w"])
  assert (config.sam.rho, config.seed, config.init_seed) == (0.05, 3, None)
  # Our own flags alone keep configs/default.py: SAM, for new work.
  config, _ = parse_run(["--workdir=/tmp/w"])
  assert (config.sam.rho, config.shuffle_buffer, config.sam.redraw_masks) == (0.05, None, False)


def test_the_official_readme_finetuning_command_trains_itself():
  """The official README's L2 ImageNet command, flag for flag: its --sam_rho 0.1 and the
  0.001 weight decay it leaves at its default (flax_training.py:51), where the paper's
  appendix (the Table 3 cells) says rho 0.05 and weight decay 1e-5."""
  command = ("--output_dir /tmp/ft --dataset imagenet --from_pretrained_checkpoint true "
             "--efficientnet_checkpoint_path /tmp/ckpt --learning_rate 0.1 --model_name "
             "efficientnet-l2-475 --batch_size 512 --num_epochs 10 --gradient_clipping 1.0 "
             "--label_smoothing 0.1 --sam_rho 0.1").split()
  try:  # absl reads `--from_pretrained_checkpoint` alone: its "true" must not be left over
    assert train.parse_flags(["train", *command]) == ["train"]
  finally:
    flags.FLAGS.unparse_flags()
  config, _ = parse_run(command)
  assert (config.sam.rho, config.weight_decay, config.learning_rate) == (0.1, 0.001, 0.1)
  assert (config.init_from, config.freeze_batch_norm, config.sync_batch_norm) == ("/tmp/ckpt", True,
                                                                                  True)
  assert config.sam.m is None  # one perturbation per device, whatever the devices


@pytest.mark.parametrize("argv, message", [
    (["--sam_rho=0.1", "--config.sam.rho=0.2", "--output_dir=/tmp/w"
     ], "--sam_rho=0.1 and --config.sam.rho=0.2 set sam.rho differently: give one of them."),
    (["--config.learning_rate=0.01", "--learning_rate", "0.3", "--workdir=/tmp/w"
     ], "--learning_rate=0.3 and --config.learning_rate=0.01 set learning_rate differently"),
    (["--workdir=/tmp/a", "--output_dir=/tmp/b"
     ], "--workdir=/tmp/a and --output_dir=/tmp/b name two places for one run: give one of them"),
])
def test_two_flags_that_disagree_are_refused_not_silently_chosen(argv, message):
  with pytest.raises(UsageError, match=f"^{re.escape(message)}"):
    parse_run(argv)
  config, workdir = parse_run(
      ["--sam_rho=0.1", "--config.sam.rho=0.1", "--output_dir=/tmp/w",
       "--workdir=/tmp/w"])  # agreeing: fine
  assert (config.sam.rho, workdir) == (0.1, "/tmp/w")
