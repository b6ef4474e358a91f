"""python -m sam_jax.analysis on a trained workdir, and the digits reproduction's tables."""

import json
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import stats

from conftest import finish, load_script, run_binary, start_process, tiny_config
from sam_jax import events
from sam_jax.analysis import intervals, report
from sam_jax.data.datasets import get_dataset_info
from sam_jax.errors import UsageError
from sam_jax.models import get_model

reproduce = load_script("reproduce_digits")
reproduce_label_noise = load_script("reproduce_label_noise")  # defines no flags on import
sys.modules["reproduce_digits"] = reproduce  # compare_variants imports it: one copy of its flags
compare_variants = load_script("compare_variants")
compare_transformers = load_script("compare_transformers")


def analysis_cli(*args):
  # One CPU device: sharding is tested in test_analysis; compiling for 8 costs here.
  return run_binary("sam_jax.analysis", *args, fast_compile=False)


def run_reproduction(out):
  """The reproduction script, cut to one seed, 20% noise and one epoch: SGD and SAM. On 8
  CPU devices, one replica of m = 16 each: on one device, SAM's step unrolls the batch's 8
  replicas, which XLA takes half a minute to compile (the loop mapping: test_train_step)."""
  done = finish(
      start_process([
          sys.executable, "scripts/reproduce_digits.py", f"--out={out}", "--seeds=0", "--noise=20",
          "--m_sweep=", "--epochs=1", "--jobs=1", "--lanczos_steps=6", "--sharpness_m=16"
      ], devices=8, fast_compile=False), timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.usefixtures("digits")  # prepared once, in the tests' TFDS folder
def test_the_reproduction_script_then_the_cli_on_one_of_its_runs(tmp_path):
  reproduction = tmp_path / "reproduction"
  run_reproduction(reproduction)
  runs = json.load(open(reproduction / "runs.json"))
  assert [r["name"] for r in runs] == ["20_sgd_s0", "20_sam_s0"]
  for run in runs:
    assert run["noise"] == 20 and run["m"] == 16 and run["m_sharpness"].keys() == {"16"}
    assert run["gap"] == pytest.approx(run["test_error"] - run["train_error"])
    # The analysis saw the noisy labels the run was trained on: one epoch cannot fit them.
    assert run["train_error"] > 0.1
  table = (reproduction / "results.md").read_text()
  sgd, sam = runs
  assert (f"| 20 | {100 - 100 * sgd['test_error']:.2f} | {100 - 100 * sam['test_error']:.2f} |"
          in table)
  for name in ("hessian_spectrum.png", "m_sharpness.png", "label_noise.png"):
    assert (reproduction / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  workdir = reproduction / "runs" / "20_sam_s0"
  out = tmp_path / "analysis"
  done = analysis_cli(f"--workdir={workdir}", f"--out={out}", "--num_examples=256",
                      "--lanczos_steps=12", "--slq_vectors=2", "--hutchinson_probes=10",
                      "--power_iterations=30", "--top_k=2", "--m=16,64")
  assert done.returncode == 0, done.stderr[-3000:]
  analysis = json.load(open(out / "analysis.json"))
  assert analysis["trained_with"] == {"rho": 0.1, "m": 16, "label_noise": 0.2, "seed": 0}
  assert analysis["results"] == json.load(open(workdir / "results.json"))
  assert analysis["num_examples"] == 256 and analysis["m_sharpness"]["num_examples"] == 256
  hessian = analysis["hessian"]
  assert hessian["num_parameters"] == 75002  # Resnet8, 10 classes
  density = hessian["density"]
  assert abs(np.trapezoid(density["density"], density["grid"]) - 1) < 1e-3
  # Lanczos and power iteration agree on lambda_max (both converge fast on the top one).
  assert hessian["lambda_max"] > hessian["top_eigenvalues"][1] > 0
  assert abs(hessian["power_iteration_top_eigenvalues"][0] / hessian["lambda_max"] - 1) < 0.05
  assert hessian["trace"]["estimate"] > hessian["lambda_max"]  # PSD-ish: the trace dominates
  sharpness = analysis["m_sharpness"]["values"]
  assert sharpness["16"] > sharpness["64"] > 0  # smaller subsets: sharper
  for name in ("hessian_spectrum.png", "m_sharpness.png", "training_curves.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # The curves of every tag the loop wrote: three panels, not an empty figure.
  assert {"train_loss", "test_loss", "train_error", "test_error",
          "learning_rate"} <= events.read_scalars(str(workdir)).keys()
  assert (out / "training_curves.png").stat().st_size > 20_000
  with pytest.raises(UsageError, match="kept no EMA .ema_decay 0.: drop --use_ema"):
    report.load_run(str(workdir), use_ema=True)


@pytest.mark.slow
def test_the_cli_says_in_one_line_that_it_needs_a_workdir():
  done = analysis_cli()
  assert done.returncode == 2 and "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      "sam_jax.analysis: error: Say which run to analyse: --workdir=DIR (a python -m "
      "sam_jax.train workdir).")


def test_a_folder_that_is_not_a_workdir_or_has_no_checkpoint_is_refused(tmp_path):
  with pytest.raises(UsageError, match=f"{tmp_path} is not a training workdir .no config.json."):
    report.load_run(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"dataset": "digits"}))
  with pytest.raises(UsageError, match=r"No checkpoint in .*checkpoints \(it has none\): train"):
    report.load_run(str(tmp_path))


def test_a_training_split_without_examples_is_refused(tmp_path):
  config = tiny_config(dataset="cifar10")
  with tfds.testing.mock_data(num_examples=0, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(UsageError, match="The training split of cifar10 has no examples"):
      report.training_examples(config, get_dataset_info("cifar10"),
                               get_model(config.model_name, 10))


def fake_run(noise, optimizer, seed, m=16, error=0.1, sharp=1.0):
  return {
      "name": f"{noise}_{optimizer}_{m}_s{seed}",
      "noise": noise,
      "optimizer": optimizer,
      "m": m,
      "seed": seed,
      "test_error": error,
      "train_error": 0.0,
      "gap": error,
      "lambda_max": 10 * sharp,
      "lambda_max/lambda_5": 2.0,
      "m_sharpness": {
          1: sharp,
          4: -sharp
      }
  }


def test_the_tables_give_means_student_t_intervals_and_kendall_tau():
  runs = [fake_run(0, "sgd", s, error=e, sharp=e) for s, e in enumerate([0.01, 0.02, 0.06])]
  runs += [fake_run(0, "sam", s, error=0.01 * (s + 1) / 2, sharp=0.1 * s) for s in range(3)]
  text = reproduce.tables(runs)
  # SGD accuracies 99, 98, 94: mean 97, half-width t(0.975, 2) * s / sqrt(3), with Student's
  # t for 2 degrees of freedom in closed form, t_p = (2p - 1) / sqrt(2 p (1 - p)), and
  # s = sqrt(((99 - 97)^2 + (98 - 97)^2 + (94 - 97)^2) / 2) = sqrt(7).
  half = 0.95 / np.sqrt(2 * 0.975 * 0.025) * np.sqrt(7) / np.sqrt(3)
  assert f"| 0 | 97.00 ± {half:.2f} | 99.00 ± " in text  # 97.00 ± 6.57
  tau = stats.kendalltau([r["m_sharpness"][1] for r in runs], [r["gap"] for r in runs]).statistic
  assert f"| tau | {tau:.2f} | {-tau:.2f} |" in text
  assert intervals.interval([5.0])[0] == 5.0 and np.isnan(intervals.interval([5.0])[1])
  assert len(reproduce.run_list([0, 1], ["0", "20", "40", "60", "80"], [4, 128])) == 24


def test_the_label_noise_table_pairs_sam_with_sgd_by_seed():
  def run(noise, optimizer, seed, accuracy, train_error):
    return {
        "noise": noise,
        "optimizer": optimizer,
        "seed": seed,
        "test_error": 1 - accuracy / 100,
        "train_eval_error": train_error
    }

  sgd = [62.0, 60.0, 58.0]
  sam = [70.0, 69.0, 65.0]  # differences 8, 9, 7: a paired interval far narrower than
  runs = ([run(40, "sgd", s, a, 0.01) for s, a in enumerate(sgd)]  # the unpaired ones
          + [run(40, "sam", s, a, 0.2 + 0.1 * s) for s, a in enumerate(sam)])
  line = reproduce_label_noise.table(runs).splitlines()[2]
  half = stats.t.ppf(0.975, 2) / np.sqrt(3)  # times the sample standard deviation
  assert line == (f"| 40 | 60.00 ± {2 * half:.2f} | 68.00 ± {np.std(sam, ddof=1) * half:.2f} "
                  f"| 8.00 ± {1 * half:.2f} | 1.00 ± 0.00 | 30.00 ± {10 * half:.2f} |")


def test_the_variant_table_has_a_row_per_variant_with_intervals_over_seeds():
  runs = compare_variants.run_list([0, 1, 2], ["0", "40"], ["sgd", "sam", "looksam"])
  assert [(r["cell"], r["name"]) for r in runs[:3]] == [  # SGD and SAM: the reproduction's
      ("0,sgd", "0_sgd_s0"), ("0,sam", "0_sam_s0"), ("0,sam,variant=looksam", "0_looksam_s0")
  ]
  accuracy = {0: [99.0, 98.0, 94.0], 40: [60.0, 70.0, 80.0]}
  done = [{
      **r, "noise": int(r["cell"].split(",")[0]),
      "lambda_max": 10.0 + r["seed"],
      "test_error": 1 - accuracy[int(r["cell"].split(",")[0])][r["seed"]] / 100,
      "seconds": {
          "train": 30.0 * (r["seed"] + 1)
      }
  } for r in runs]
  lines = compare_variants.table(done, ["sgd", "sam", "looksam"], [0, 40]).splitlines()
  assert lines[0] == ("| variant | 0% noise: accuracy % | lambda_max | 40% noise: accuracy % "
                      "| lambda_max | training time (s) |") and len(lines) == 2 + 3
  t = stats.t.ppf(0.975, 2) / np.sqrt(3)  # times the sample standard deviation
  seconds = [30, 60, 90] * 2  # the time column pools both noise levels: 6 runs
  time_half = stats.t.ppf(0.975, 5) * np.std(seconds, ddof=1) / np.sqrt(6)
  assert lines[4] == (f"| looksam | 97.00 ± {np.std(accuracy[0], ddof=1) * t:.2f} | 11.00 ± "
                      f"{t:.2f} | 70.00 ± {10 * t:.2f} | 11.00 ± {t:.2f} | 60 ± {time_half:.0f} |")


def test_the_transformer_table_gives_each_optimizers_gain_over_adamw_seed_by_seed():
  runs = compare_transformers.run_list([0, 1, 2], ["0"])
  assert runs[0] == {
      "config": "digits_transformers",
      "cell": "0,adamw,vit",
      "seed": 0,
      "model": "vit",
      "name": "vit_0_adamw_s0"
  }
  assert len(runs) == 3 * 2 * 3  # seeds x models x optimizers
  accuracy = {"adamw": [80.0, 90.0, 85.0], "sam": [84.0, 91.0, 90.0], "gsam": [80.0, 90.0, 85.0]}
  done = [{
      **r, "noise": 0,
      "train_error": 0.1,
      "optimizer": r["cell"].split(",")[1],
      "lambda_max": 5.0,
      "test_error": 1 - accuracy[r["cell"].split(",")[1]][r["seed"]] / 100
  } for r in runs]
  lines = compare_transformers.table(done).splitlines()
  t = stats.t.ppf(0.975, 2) / np.sqrt(3)  # times the sample standard deviation
  gains = [4.0, 1.0, 5.0]  # SAM's, seed by seed
  assert lines[3] == (f"| vit | 0 | sam | 88.33 ± {np.std(accuracy['sam'], ddof=1) * t:.2f} | "
                      f"3.33 ± {np.std(gains, ddof=1) * t:.2f} | 10.00 ± 0.00 | 5.00 ± 0.00 |")
  assert lines[2].endswith("| 85.00 ± " + f"{np.std(accuracy['adamw'], ddof=1) * t:.2f} |  | "
                           "10.00 ± 0.00 | 5.00 ± 0.00 |")  # AdamW: no gain over itself
  assert len(lines) == 2 + 2 * 3
