"""scripts/accelerator_check.py rehearsed on the CPU (`--dry_run`), as a GPU would run it,
on a Python without TensorFlow, clu or TFDS; and its time budget."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, binary_env, load_script

accelerator_check = load_script("accelerator_check")

WITHOUT_TF = ("import sys, runpy\n"
              "for name in ('tensorflow', 'tensorflow_datasets', 'clu'):\n"
              "  sys.modules[name] = None  # `import name` raises ImportError\n"
              "sys.argv[0] = 'scripts/accelerator_check.py'\n"
              "sys.path.insert(0, 'scripts')\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@pytest.mark.slow
def test_the_dry_run_runs_every_path_without_tensorflow(tmp_path):
  out = tmp_path / "check.json"
  done = subprocess.run([
      sys.executable, "-c", WITHOUT_TF, "--dry_run", "--json",
      str(out), "--blocks", "1", "--block", "2"
  ], cwd=ROOT, env=binary_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout + done.stderr
  results = json.loads(out.read_text())
  assert results["passed"] and not results["skipped"]

  # One SAM step: the device (here the CPU again) within the stated tolerance of float64,
  # and that tolerance far below what a 1% change of rho does to the step.
  step = results["step"]
  assert 0 < step["cpu_float32_error"] < 1e-4
  assert step["device_float32_highest_error"] <= step["tolerance"]
  assert step["rho_one_percent_change"] > 100 * step["tolerance"]
  assert results["training"]["last_loss"] < results["training"]["first_loss"] / 2

  # Every group of the dry run, SGD then SAM, with all its figures.
  rows = results["rows"]
  groups = accelerator_check.groups(dry_run=True)
  assert [(r["model"], r["m"], r["mapping"], r["dtype"], r["optimizer"]) for r in rows
         ] == [(g.model, g.m, g.mapping, g.dtype, opt) for g in groups for opt in ("SGD", "SAM")]
  assert {g.mapping for g in groups if g.m} == {"loop", "scan", "vmap"}
  assert {g.dtype for g in groups} == {"float32", "bfloat16"}
  for r in rows:
    assert r["step_ms"] > 0 and r["compile_s"] > 0 and r["tflops_per_s"] > 0  # scan's too
    assert 0 < r["fraction_of_bf16_peak"] and 0 < r["fraction_of_f32_peak"]
    assert ("sam_over_sgd" in r) == (r["optimizer"] == "SAM")
  assert done.stdout.count("PASS") == 2
  assert accelerator_check.HEADER in done.stdout
  assert sum(line.startswith("| ") for line in done.stdout.splitlines()) == 2 + len(rows)


def test_the_estimate_scales_an_unrolled_loop_by_its_replicas():
  wrn, resnet = accelerator_check.groups(dry_run=False)[:2], accelerator_check.groups(False)[4]
  vmap_bf16, vmap_f32 = wrn
  loop = next(g for g in accelerator_check.groups(False) if g.mapping == "loop")
  assert accelerator_check.estimate(vmap_bf16, {}) is None  # the first one runs
  assert accelerator_check.estimate(vmap_f32, {vmap_bf16: 40.0}) == 40.0
  assert accelerator_check.estimate(loop, {vmap_bf16: 40.0}) == 40.0 * 8
  assert accelerator_check.estimate(resnet, {vmap_bf16: 40.0, vmap_f32: 50.0}) == 50.0


def test_what_does_not_fit_the_budget_is_skipped_and_said(tmp_path, monkeypatch, capsys):
  now = [0.0]
  monkeypatch.setattr(accelerator_check, "clock", lambda: now[0])
  monkeypatch.setattr(accelerator_check, "START", 0.0)
  monkeypatch.setattr(accelerator_check, "environment", lambda: {"device": "fake"})
  monkeypatch.setattr(accelerator_check, "peaks", lambda dry_run: {"bfloat16": 1.0, "float32": 1.0})
  monkeypatch.setattr(
      accelerator_check, "check_step",
      lambda dry_run: dict(model="m", batch=1, m=1, cpu_float32_error=1e-6, tolerance=1e-5,
                           device_float32_highest_error=1e-6, device_float32_default_error=1e-3,
                           rho_one_percent_change=1e-2, passed=True))
  monkeypatch.setattr(
      accelerator_check, "check_training",
      lambda dry_run: dict(model="m", steps=1, dtype="float32", mapping="vmap", m=1, first_loss=2.0,
                           last_loss=0.5, passed=True))

  def time_group(group, *args):  # every group takes 30 s
    now[0] += 30
    row = dict(
        vars(group), optimizer="SGD", virtual_replicas=group.virtual_replicas, step_ms=1.0,
        images_per_s=1.0, tflops_per_s=1.0, fraction_of_bf16_peak=0.5, fraction_of_f32_peak=0.5,
        working_gib=1.0, peak_gib=1.0, compile_s=1.0)
    return [row, dict(row, optimizer="SAM", sam_over_sgd=2.0)]

  monkeypatch.setattr(accelerator_check, "time_group", time_group)
  out = tmp_path / "check.json"
  results = accelerator_check.main(["--json", str(out), "--budget_seconds", "100"])
  # Three groups fit (90 s); the unrolled loop would take 8 x 30 s, the rest 30 s each.
  assert len(results["rows"]) == 6
  assert [s["mapping"] for s in results["skipped"]][:1] == ["loop"]
  assert len(results["skipped"]) == len(accelerator_check.groups(False)) - 3
  assert json.loads(out.read_text())["skipped"] == results["skipped"]
  printed = capsys.readouterr().out
  assert "skipped: WideResnet28x10 (m = 32 x 8, loop, bfloat16), SGD and SAM: about 240 s " \
         "needed, 10 s left" in printed
