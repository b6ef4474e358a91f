"""What the speed scripts measure: the FLOP count of step_timing.py (benchmark_step.py's and
accelerator_check.py's), the PyTorch reference model, and trace_gaps.py's reading of a
`config.profile_steps` trace."""

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
