"""What the speed scripts measure: the FLOP count of step_timing.py (benchmark_step.py's and
accelerator_check.py's), the PyTorch reference model, and trace_gaps.py's reading of a
`config.profile_steps` trace."""

import json

import jax
import jax.numpy as jnp
import pytest

from conftest import load_script
from sam_jax import profiling
from sam_jax.models import get_model

benchmark = load_script("benchmark_step")
step_timing = load_script("step_timing")
trace_gaps = load_script("trace_gaps")


def test_the_flops_are_xlas_count_of_the_compiled_program():
  a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
  compiled = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
  assert step_timing.compiled_flops(compiled) == 2 * 64 * 32 * 16  # a multiply and an add each


@pytest.mark.slow  # imports PyTorch where it is installed
def test_the_pytorch_reference_has_our_wide_resnets_parameter_shapes():
  torch = pytest.importorskip("torch")  # optional: --torch says so when it is missing
  step = benchmark.torch_reference.make_step(16, 2, 10, batch_size=4, image_size=32, rho=0.05)
  params = next(c.cell_contents for c in step.__closure__ if isinstance(c.cell_contents, list))
  before = [p.detach().clone() for p in params]
  step()  # one SAM step moves every parameter that has a gradient
  assert all(not torch.equal(p, q) for p, q in zip(params, before))
  ours = jax.eval_shape(lambda: get_model("WideResnet16x2", 10).init(
      jax.random.key(0), jnp.ones((1, 32, 32, 3))))["params"]
  # Our HWIO kernels are PyTorch's OIHW weights, our (in, out) dense kernels its (out, in).
  as_torch = {4: lambda s: (s[3], s[2], s[0], s[1]), 2: lambda s: (s[1], s[0]), 1: tuple}
  assert sorted(as_torch[len(x.shape)](x.shape) for x in jax.tree.leaves(ours)) == sorted(
      tuple(p.shape) for p in params)


def test_the_profiler_traces_the_asked_steps_and_trace_gaps_finds_them(tmp_path, capsys):
  step = jax.jit(lambda x: jnp.tanh(x @ x))
  state, profiler = jnp.eye(256), profiling.StepProfiler(str(tmp_path), 0, num_steps=4)
  for t in range(1, 20):
    state = step(state)
    profiler.after_step(t, state)
  profiler.close(state)  # already closed at step 14: nothing happens
  trace_gaps.main_with([str(tmp_path)])
  out = capsys.readouterr().out
  assert ": 4 executions" in out and "% idle" in out  # steps 11-14, one program each
  with pytest.raises(SystemExit, match="--config.profile_steps=N first"):
    trace_gaps.main_with([str(tmp_path / "none")])


def test_the_frontier_measures_each_variant_against_sgd_and_sam(tmp_path):
  frontier = load_script("plot_frontier")
  # Two seeds each: SGD 90% accurate at 40% noise and lambda_max 40 clean; SAM 94% and 10.
  numbers = {"sgd": (0.10, 40.0), "sam": (0.06, 10.0), "cheap": (0.063, 15.0), "flat": (0.10, 10.0)}
  runs = [{
      "variant": v,
      "noise": noise,
      "seed": seed,
      "test_error": error if noise else 0.01,
      "lambda_max": lam if noise == 0 else 99.0
  } for v, (error, lam) in numbers.items() for noise in (0, 40) for seed in (0, 1)]
  (tmp_path / "study").mkdir()
  (tmp_path / "study" / "variants.json").write_text(json.dumps(runs))
  costs = {"SGD": 1.0, "sam": 2.0, "cheap": 1.1, "flat": 1.05}
  (tmp_path / "costs.json").write_text(
      json.dumps({
          "setup": "test",
          "rows": {
              k: {
                  "ms": 1.0,
                  "ratio_to_sgd": c
              } for k, c in costs.items()
          }
      }))
  points = frontier.fractions(runs)
  assert points["cheap"] == pytest.approx((3.7, 0.925, 25.0, 25 / 30))  # meets the goal
  assert points["flat"][1] == pytest.approx(0.0) and points["flat"][3] == pytest.approx(1.0)
  table = frontier.table(points, costs)
  assert "| cheap | 1.10 | +3.70 | 93% | +25.00 | 83% | yes |" in table
  assert "| flat | 1.05 | +0.00 | 0% | +30.00 | 100% | no |" in table
