"""The experiment configs: paper cells parse through the binary with the paper's settings."""

import glob
import importlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, parse_run
from sam_jax import optim, run_setup
from sam_jax.data.augmentation import Augmentation
from sam_jax.data.datasets import get_dataset_info
from sam_jax.errors import UsageError
from sam_jax.models import get_model, layers

# Transcribed from Foret et al. (2021), Tables 6 and 7:
# (model, epochs, lr (or per dataset), wd, rho per dataset).
# yapf: disable  (the paper's rows, kept compact)
PAPER = {
    "table1_wrn28x10_200ep": ("WideResnet28x10", 200, 0.1, 5e-4,
                              {"cifar10": 0.05, "cifar100": 0.1}),
    "table1_wrn28x10_1800ep": ("WideResnet28x10", 1800, 0.05, 1e-3,
                               {"cifar10": 0.05, "cifar100": 0.1}),
    "table1_shake_shake": ("WideResnet28x6_ShakeShake", 1800, 0.02, 1e-3,
                           {"cifar10": 0.02, "cifar100": 0.05}),
    "table1_pyramidnet": ("Pyramid_vanilla", 1800, 0.05, 5e-4,
                          {"cifar10": 0.05, "cifar100": 0.2}),
    "table1_pyramid_shakedrop": ("Pyramid_ShakeDrop", 1800, {"cifar10": 0.02, "cifar100": 0.05},
                                 5e-4, {"cifar10": 0.05, "cifar100": 0.05}),
    "table5_wrn28x10": ("WideResnet28x10", 200, {"svhn": 0.01, "fashion_mnist": 0.1}, 5e-4,
                        {"svhn": 0.01, "fashion_mnist": 0.05}),
}
# yapf: enable
AUGMENTATIONS = {
    "basic": ("basic", "none"),
    "cutout": ("basic", "cutout"),
    "aa": ("autoaugment", "cutout")
}
# SVHN's AA row: the SVHN policy without crops or flips (the original's aa-only), cutout.
SVHN_AA = ("aa-only", "cutout")


def docstring_cells(name):
  """(dataset, augmentation, SAM error, SGD error) rows of a paper config's results table."""
  doc = importlib.import_module(f"configs.{name}").__doc__
  return re.findall(r"^\s+(\w+),(\w+)\s+([\d.]+)±\S+\s+([\d.]+)±", doc, re.MULTILINE)


def docstring_command(name):
  doc = importlib.import_module(f"configs.{name}").__doc__
  command = re.search(r"python -m sam_jax\.train (.*?)\n\n", doc, re.DOTALL).group(1)
  return command.replace("\\\n", " ").split()


@pytest.mark.parametrize("name", sorted(PAPER))
def test_every_paper_cell_parses_into_the_papers_hyper_parameters(name):
  model, epochs, lr, wd, rho = PAPER[name]
  cells = docstring_cells(name)
  assert {dataset for dataset, *_ in cells} == set(rho)  # the table covers every dataset
  for dataset, augmentation, sam_error, sgd_error in cells:
    assert float(sam_error) < float(sgd_error)  # what the paper claims, transcribed right
    for optimizer in ("sam", "sgd"):
      config, workdir = parse_run(
          [f"--config=configs/{name}.py:{dataset},{augmentation},{optimizer}", "--workdir=/tmp/w"])
      assert (config.dataset, config.model_name, config.num_epochs) == (dataset, model, epochs)
      assert (config.image_level_augmentations, config.batch_level_augmentations) == (
          SVHN_AA if (dataset, augmentation) == ("svhn", "aa") else AUGMENTATIONS[augmentation])
      info = get_dataset_info(dataset)
      Augmentation.from_config(config).check(info)  # the pipeline offers it
      if augmentation == "aa":
        assert Augmentation.from_config(config).policy(info) == ("svhn"
                                                                 if dataset == "svhn" else "cifar")
      assert config.learning_rate == (lr[dataset] if isinstance(lr, dict) else lr)
      assert (config.weight_decay, optim.weight_decay_type(config)) == (wd, "l2")
      assert config.sam.rho == (rho[dataset] if optimizer == "sam" else 0.0)
      assert (config.batch_size, config.sam.m, config.momentum, config.nesterov) == (256, 32, 0.9,
                                                                                     True)
      assert (config.lr_schedule, config.gradient_clipping, config.sync_batch_norm) == ("cosine",
                                                                                        5.0, False)
      assert config.autoaugment_faithful  # the original's AutoAugment in every AA cell


@pytest.mark.parametrize("name", sorted(PAPER))
def test_the_docstring_command_runs_the_binary_parser(name):
  config, workdir = parse_run(docstring_command(name))
  assert workdir.startswith("workdirs/") and config.model_name == PAPER[name][0]


def test_imagenet_resnet_cells_follow_section_3_1():
  doc = importlib.import_module("configs.table2_imagenet_resnet").__doc__
  cells = re.findall(r"^\s+(Resnet\d+),(\d+)\s+([\d.]+)±\S+\s+([\d.]+)±", doc, re.MULTILINE)
  assert len(cells) == 9
  for model, epochs, sam_error, sgd_error in cells:
    assert float(sam_error) < float(sgd_error)
    for optimizer in ("sam", "sgd"):
      config, _ = parse_run([
          f"--config=configs/table2_imagenet_resnet.py:{model},{epochs},"
          f"{optimizer}", "--workdir=/tmp/w"
      ])
      assert (config.dataset, config.model_name, config.num_epochs) == ("imagenet", model,
                                                                        int(epochs))
      resnet = get_model(config.model_name, 1000)  # the paper's, not the standard v1.5
      assert not resnet.stem_relu and resnet.kernel_init is not layers.conv_init
      assert (config.batch_size, config.learning_rate, config.weight_decay) == (4096, 1.0, 1e-4)
      assert (config.label_smoothing, config.lr_schedule, config.momentum) == (0.1, "cosine", 0.9)
      assert config.sam.rho == (0.05 if optimizer == "sam" else 0.0)
      assert config.compute_top_5_error_rate


def test_label_noise_cells_follow_section_3_3():
  for noise in (20, 40, 60, 80):
    for optimizer in ("sam", "sgd"):
      config, _ = parse_run(
          [f"--config=configs/table4_label_noise.py:{noise},{optimizer}", "--workdir=/tmp/w"])
      assert (config.dataset, config.model_name, config.num_epochs) == ("cifar10", "Resnet32", 200)
      assert config.label_noise == noise / 100
      rho = 0.05 if noise == 80 else 0.1
      assert config.sam.rho == (rho if optimizer == "sam" else 0.0)


@pytest.mark.parametrize("cell, message", [
    ("cifar10,autoaugment,sam", "AUGMENTATION in basic|cutout|aa and"),
    ("imagenet,basic,sam", "DATASET in cifar10|cifar100,"),
    ("cifar10,basic", "give DATASET,AUGMENTATION,OPTIMIZER"),
])
def test_a_bad_cell_names_the_choices(cell, message):
  from configs import table1_wrn28x10_200ep
  with pytest.raises(UsageError, match=re.escape(message)):
    table1_wrn28x10_200ep.get_config(cell)


def test_original_imagenet_flags_mean_randaugment_and_mixup():
  config, _ = parse_run([
      "--dataset=imagenet", "--image_level_augmentations=autoaugment", "--imagenet_mixup_alpha=0.2",
      "--randaug_magnitude=15", "--output_dir=/tmp/w"
  ])
  assert (config.image_level_augmentations, config.batch_level_augmentations) == ("randaugment",
                                                                                  "mixup")
  assert config.autoaugment_faithful  # the original's RandAugment constants and ops
  assert (config.mixup_alpha, config.randaug_magnitude, config.randaug_num_layers) == (0.2, 15, 2)
  config, _ = parse_run(
      ["--dataset=cifar10", "--image_level_augmentations=autoaugment", "--output_dir=/tmp/w"])
  assert (config.image_level_augmentations, config.batch_level_augmentations) == ("autoaugment",
                                                                                  "none")
  assert config.autoaugment_faithful
  config, _ = parse_run(["--dataset=cifar10", "--output_dir=/tmp/w"])
  assert config.autoaugment_faithful  # the original flags start from configs/original.py
  config, _ = parse_run(["--workdir=/tmp/w"])
  assert not config.autoaugment_faithful  # configs/default.py: scaled, for new work


def test_svhn_has_no_cutout_cell():
  from configs import table5_wrn28x10
  with pytest.raises(UsageError, match=re.escape("AUGMENTATION in basic|aa and")):
    table5_wrn28x10.get_config("svhn,cutout,sam")


def test_the_configs_and_reproducing_guides_list_every_config_file():
  guides = "".join(
      open(os.path.join(ROOT, "docs", "guides", name)).read()
      for name in ("configs.md", "reproducing.md"))
  for path in glob.glob(os.path.join(ROOT, "configs", "*.py")):
    module = importlib.import_module(f"configs.{os.path.basename(path)[:-3]}")
    if hasattr(module, "get_config"):
      assert f"configs/{os.path.basename(path)}" in guides, path


def test_finetuning_cells_follow_appendix_c2():
  """Foret et al. (2021), Appendix C.2: "a batch size of 1024 on Google Cloud TPUv3 64
  cores", L2 "a batch size 512 ... TPUv3 128 cores", weight decay 1e-5, lr 0.016 / 0.008,
  5k steps (L2: adjusted to 10k), ImageNet 10 epochs at lr 0.1 and rho 0.05; Table 10:
  B7 at rho 0.05. Label smoothing 0.1 and clipping 1.0: the official README's command."""
  from configs import table3_finetune
  cells = re.findall(r"^\s+(b7|l2),(\w+)\s+([\d.]+)±\S+\s+([\d.]+)", table3_finetune.__doc__,
                     re.MULTILINE)
  assert len(cells) == 14
  assert {d for _, d, *_ in cells} == set(table3_finetune.DATASETS) - {"caltech_birds2011"}
  for model, dataset, sam_error, sgd_error in cells + [("b7", "caltech_birds2011", 0, 1),
                                                       ("l2", "caltech_birds2011", 0, 1)]:
    assert float(sam_error) < float(sgd_error)  # what the paper claims, transcribed right
    for optimizer in ("sam", "sgd"):
      config, _ = parse_run([
          f"--config=configs/table3_finetune.py:{model},{dataset},{optimizer}", "--workdir=/tmp/w"
      ])
      name = {"b7": "efficientnet-b7", "l2": "efficientnet-l2-475"}[model]
      assert (config.model_name, config.dataset) == (name, dataset)
      assert config.init_from == f"checkpoints/{name}" and config.freeze_batch_norm
      # One perturbation per TPU core: m = 1024 / 64 and 512 / 128.
      assert (config.batch_size, config.sam.m) == ((1024, 16) if model == "b7" else (512, 4))
      if dataset == "imagenet":
        assert (config.num_epochs, config.learning_rate, config.num_train_steps) == (10, 0.1, None)
      else:
        assert (config.num_train_steps,
                config.learning_rate) == ((5000, 0.016) if model == "b7" else (10000, 0.008))
      assert config.sam.rho == (0.05 if optimizer == "sam" else 0.0)
      assert (config.weight_decay, config.momentum, config.lr_schedule) == (1e-5, 0.9, "cosine")
      assert (config.gradient_clipping, config.label_smoothing) == (1.0, 0.1)
      assert config.sync_batch_norm  # efficientnet.py:310-316 of the original
      assert config.image_size is None  # the model's resolution
      Augmentation.from_config(config).check(get_dataset_info(dataset))
      assert config.autoaugment_faithful or config.image_level_augmentations == "basic"
  config, workdir = parse_run(docstring_command("table3_finetune"))
  assert workdir.startswith("workdirs/") and config.model_name == "efficientnet-b7"
  assert table3_finetune.get_config("b7,cifar100,sam,rho=0.1").sam.rho == 0.1  # the grid
  assert table3_finetune.get_config("l2,food101,sgd,rho=0.1").sam.rho == 0.0


def test_original_finetuning_flags():
  config, _ = parse_run([
      "--dataset=cifar100", "--model_name=efficientnet-b0", "--use_rmsprop",
      "--from_pretrained_checkpoint", "--efficientnet_checkpoint_path=/ckpt", "--output_dir=/tmp/w"
  ])
  assert (config.init_from, config.freeze_batch_norm, config.optimizer) == ("/ckpt", True,
                                                                            "rmsprop")
  assert config.sync_batch_norm  # the original's EfficientNet, efficientnet.py:310-316
  config, _ = parse_run(["--efficientnet_checkpoint_path=/ckpt", "--output_dir=/tmp/w"])
  assert config.init_from is None  # the original read the path only when finetuning
  assert not config.sync_batch_norm  # the WideResNet default: per-replica statistics
  with pytest.raises(UsageError, match="needs --efficientnet_checkpoint_path"):
    parse_run(["--from_pretrained_checkpoint", "--output_dir=/tmp/w"])


def test_digits_cells_follow_table4_and_share_their_noise_between_sgd_and_sam():
  from configs import digits_label_noise, digits_sharpness, table4_label_noise
  for noise in table4_label_noise.NOISE:  # the paper's rho and noise at every level
    for optimizer in ("sam", "sgd"):
      paper = table4_label_noise.get_config(f"{noise},{optimizer}")
      small = digits_sharpness.get_config(f"{noise},{optimizer}")
      assert (small.sam.rho, small.label_noise) == (paper.sam.rho, paper.label_noise)
      # Table 4 at small scale: the same run, trained for the paper's epochs and also
      # scored on its noisy training labels; nothing else differs.
      long = digits_label_noise.get_config(f"{noise},{optimizer}")
      differ = {k for k, v in long.items() if v != small[k]}
      assert differ == {
          "num_epochs", "also_eval_on_training_set", "evaluate_every", "log_every_steps"
      }
      assert long.num_epochs == paper.num_epochs and long.also_eval_on_training_set
  for module in (digits_sharpness, digits_label_noise):
    sgd, sam = module.get_config("40,sgd"), module.get_config("40,sam")
    sgd.seed = sam.seed = 3
    assert sgd.label_noise_seed == sam.label_noise_seed == 3  # the same noisy labels
  assert digits_sharpness.get_config("0,sam,4").sam.m == 4
  config, workdir = parse_run(docstring_command("digits_sharpness")[:-1])
  assert workdir == "workdirs/digits_sharpness/40_sam" and config.label_noise == 0.4
  with pytest.raises(
      UsageError, match=re.escape(
          "NOISE_PERCENT in 0|20|40|60|80, OPTIMIZER in sam|sgd, M an integer (default 16) and "
          "VARIANT a string (default sam)")):
    digits_sharpness.get_config("10,sam")
  gsam = digits_sharpness.get_config("40,sam,variant=gsam").sam
  assert (gsam.variant, gsam.rho, gsam.gsam_rho_min) == ("gsam", 0.2, 0.1)  # 2 rho -> rho
  msam = digits_sharpness.get_config("0,sam,variant=msam").sam
  assert msam.variant == "msam" and msam.rho == pytest.approx(1.5)  # the authors' 15x
  assert digits_sharpness.get_config("0,sam,variant=every5").sam.every == 5
  assert digits_sharpness.get_config("0,sgd,variant=looksam").sam.rho == 0.0  # sgd: no SAM
  with pytest.raises(
      UsageError, match=r"^Unknown SAM variant 'asam' in the cell "
      r"'0,sam,variant=asam': choose one of sam, gsam, "):
    digits_sharpness.get_config("0,sam,variant=asam")


def test_cells_are_positional_or_named_with_optional_typed_axes():
  from configs import cells
  axes = dict(noise_percent=("0", "20"), optimizer=cells.OPTIMIZERS, m=16)
  assert cells.parse("20,sgd", **axes).to_dict() == {
      "noise_percent": "20",
      "optimizer": "sgd",
      "m": 16
  }
  assert cells.parse("optimizer=sam,noise_percent=0,m=4", **axes).to_dict() == {
      "noise_percent": "0",
      "optimizer": "sam",
      "m": 4
  }
  for bad in ("20,sgd,four", "20,sgd,4,5", "sgd,20", "noise=20,optimizer=sgd", ""):
    with pytest.raises(
        UsageError, match=f"Unknown experiment cell '{bad}': give "
        r"NOISE_PERCENT,OPTIMIZER\[,M\] after"):
      cells.parse(bad, **axes)
  assert (cells.sam_rho("sam", 0.1), cells.sam_rho("sgd", 0.1)) == (0.1, 0.0)


# Every cell of the paper's Tables 1-5 (the tables' rows and columns, not the configs').
TABLE1 = [f"{d},{a}" for d in ("cifar10", "cifar100") for a in ("basic", "cutout", "aa")]
PAPER_CELLS = {
    **{
        name: TABLE1
        for name in ("table1_wrn28x10_200ep", "table1_wrn28x10_1800ep", "table1_shake_shake",
                     "table1_pyramidnet", "table1_pyramid_shakedrop")
    },
    "table2_imagenet_resnet": [
        f"{m},{e}" for m in ("Resnet50", "Resnet101", "Resnet152") for e in (100, 200, 400)
    ],
    # Table 3's rows that TFDS carries (Birdsnap and FGVC Aircraft it does not).
    "table3_finetune": [
        f"{m},{d}" for m in ("b7", "l2")
        for d in ("imagenet", "cifar10", "cifar100", "oxford_flowers102", "oxford_iiit_pet",
                  "cars196", "food101")
    ],
    "table4_label_noise": ["20", "40", "60", "80"],
    "table5_wrn28x10": ["svhn,basic", "svhn,aa", "fashion_mnist,basic", "fashion_mnist,cutout"],
}


@pytest.mark.parametrize("name", sorted(PAPER_CELLS))
@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_every_paper_cell_builds_what_the_original_code_ran(name, backend, monkeypatch):
  """Issues 15 and 31, cell by cell: what google-research/sam ran for each paper cell, as
  the binary resolves it on an accelerator."""
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  for cell in PAPER_CELLS[name]:
    for optimizer in ("sam", "sgd"):
      config, _ = parse_run([f"--config=configs/{name}.py:{cell},{optimizer}", "--workdir=/tmp/w"])
      info = get_dataset_info(config.dataset)
      model = run_setup.build_model(config, info.num_classes)
      # float32 activations: no dtype in any flax.nn layer (imagenet_models/resnet.py:77).
      assert model.dtype == jnp.float32, (name, cell)
      # AutoAugment op for op (autoaugment/autoaugment.py:621): 250-px translates...
      if config.image_level_augmentations in ("autoaugment", "aa-only", "randaugment"):
        assert config.autoaugment_faithful, (name, cell)
      # ...the stateful Bernoulli of sam_jax/train.py:77-84 in models with masks...
      assert config.sam.redraw_masks, (name, cell)
      # ...tf.compat.v1.image.resize_bicubic (dataset_source.py:67,
      # dataset_source_imagenet.py:107), the 50,000-example buffer (dataset_source.py:116)...
      assert (config.resize_method, config.shuffle_buffer) == ("bicubic_tf1", 50_000)
      # ...and each of the 5 runs with its own initialisation (Sec. 3.1, not the code's).
      assert config.init_seed is None
      # ...EfficientNet's BatchNorm over all replicas (efficientnet.py:310-316)...
      if config.model_name.startswith("efficientnet"):
        assert config.sync_batch_norm, (name, cell)
      else:
        assert not config.sync_batch_norm, (name, cell)
      # ...imagenet_models/resnet.py: no ReLU after the stem BatchNorm, lecun-normal...
      if name == "table2_imagenet_resnet":
        assert not model.stem_relu and model.kernel_init is not layers.conv_init
      # ...and the original's defaults where no table says otherwise: cosine decay, no
      # EMA, no grouped perturbation sync, labels flipped to another class.
      assert (config.lr_schedule, config.ema_decay,
              config.sam.sync_perturbations) == ("cosine", 0.0, False), (name, cell)
      assert not config.label_noise_keep_possible
      Augmentation.from_config(config).check(info)


def test_digits_transformers_cells():
  from configs import digits_transformers  # pylint: disable=import-outside-toplevel
  adamw, sam, gsam = (
      digits_transformers.get_config(f"40,{o},mixer") for o in ("adamw", "sam", "gsam"))
  assert (adamw.model_name, adamw.optimizer, adamw.label_noise) == ("Mixer-mini_2", "adamw", 0.4)
  assert optim.weight_decay_type(adamw) == "decoupled"  # AdamW's
  assert (adamw.sam.rho, sam.sam.rho, sam.sam.variant) == (0.0, 0.1, "sam")
  assert (gsam.sam.variant, gsam.sam.rho, gsam.sam.gsam_rho_min) == ("gsam", 0.2, 0.1)
  assert digits_transformers.get_config("0,sam,vit").model_name == "ViT-mini_2"
  with pytest.raises(UsageError, match="NOISE_PERCENT,OPTIMIZER,MODEL"):
    digits_transformers.get_config("0,sgd,vit")


def transformer_rows():
  """(model, AdamW, SAM, GSAM top-1, rho_max, rho_min, alpha) of the ImageNet config's table."""
  doc = importlib.import_module("configs.transformers_imagenet").__doc__
  return re.findall(
      r"^\s+((?:ViT|Mixer)-\w+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
      r"([\d.]+)\s+([\d.]+)$", doc, re.MULTILINE)


def test_transformer_imagenet_cells_follow_gsam_table_4():
  rows = transformer_rows()
  assert len(rows) == 9
  steps_per_epoch = 1_281_167 // 4096
  for model, adamw_top1, sam_top1, gsam_top1, rho_max, rho_min, alpha in rows:
    assert float(adamw_top1) < float(sam_top1) < float(gsam_top1)  # GSAM's Table 1, as claimed
    adamw, _ = parse_run(
        [f"--config=configs/transformers_imagenet.py:{model},adamw", "--workdir=/tmp/w"])
    gsam, _ = parse_run(
        [f"--config=configs/transformers_imagenet.py:{model},gsam", "--workdir=/tmp/w"])
    for config in (adamw, gsam):  # Table 4's shared recipe and big_vision's config
      assert (config.dataset, config.model_name, config.num_epochs,
              config.batch_size) == ("imagenet", model, 300, 4096)
      assert (config.optimizer, config.learning_rate, config.lr_schedule, config.linear_end,
              config.warmup_steps) == ("adamw", 3e-3, "linear", 0.01, 10_000)
      assert (config.weight_decay, optim.weight_decay_type(config),
              config.weight_decay_kernels_only, config.gradient_clipping) == (0.3, "decoupled",
                                                                              True, 1.0)
      assert (config.loss, config.head_bias_init, config.normalization) == ("sigmoid", -10.0,
                                                                            "minus_one_to_one")
      assert config.classifier == ("gap" if model.startswith("ViT") else None)
      assert (config.image_level_augmentations, config.batch_level_augmentations,
              config.dtype) == ("basic", "none", "float32")
    assert adamw.sam.rho == 0.0
    assert (gsam.sam.variant, gsam.sam.rho, gsam.sam.gsam_rho_min,
            gsam.sam.gsam_alpha) == ("gsam", float(rho_max), float(rho_min), float(alpha))
    schedule = optim.learning_rate_schedule(gsam, steps_per_epoch)
    last = 300 * steps_per_epoch
    assert [float(schedule(t)) for t in (0, 10_000)] == [0.0, pytest.approx(3e-3)]
    assert float(schedule(last)) == pytest.approx(3e-5)
  sam, _ = parse_run(
      ["--config=configs/transformers_imagenet.py:ViT-B_16,sam,0.2", "--workdir=/tmp/w"])
  assert (sam.sam.variant, sam.sam.rho) == ("sam", 0.2)
  from configs import transformers_imagenet  # pylint: disable=import-outside-toplevel
  with pytest.raises(UsageError, match="The sam cell needs its rho, 'ViT-S_16,sam,RHO'"):
    transformers_imagenet.get_config("ViT-S_16,sam")
  with pytest.raises(UsageError, match="The gsam cell takes Table 4's rho"):
    transformers_imagenet.get_config("ViT-S_16,gsam,0.3")
  parse_run(docstring_command("transformers_imagenet"))


def test_transformer_imagenet_vit_is_built_with_the_mean_token_head_at_minus_ten():
  config, _ = parse_run(
      ["--config=configs/transformers_imagenet.py:ViT-S_32,adamw", "--workdir=/tmp/w"])
  assert run_setup.build_model(config, 1000).classifier == "gap"
  config.model_name = "ViT-mini_8"  # the same options on a model cheap to initialise
  params = run_setup.build_model(config,
                                 3).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                         train=False)["params"]
  assert "cls" not in params
  np.testing.assert_array_equal(params["head"]["bias"], -10.0)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_transformer_cifar_cells(dataset):
  for model, name in (("vit", "ViT-S_4"), ("mixer", "Mixer-S_4")):
    adamw, sam, gsam = (
        parse_run(
            [f"--config=configs/transformers_cifar.py:{dataset},{model},{o}",
             "--workdir=/tmp/w"])[0] for o in ("adamw", "sam", "gsam"))
    assert (adamw.model_name, adamw.dataset, adamw.batch_size, adamw.sam.m) == (name, dataset, 256,
                                                                                32)
    assert (adamw.sam.rho, sam.sam.rho, gsam.sam.variant, gsam.sam.rho) == (0.0, 0.05, "gsam", 0.1)
    Augmentation.from_config(adamw).check(get_dataset_info(dataset))
  parse_run(docstring_command("transformers_cifar"))
