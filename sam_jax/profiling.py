"""A profile trace of a few train steps, for TensorBoard's profile plugin or Perfetto.

`config.profile_steps = N` traces steps s+11 .. s+10+N of a run started (or resumed) at
step s, after the first steps' compilation, into WORKDIR/plugins/profile/<date>/ (a
`.xplane.pb` and a Perfetto `.trace.json.gz`). `scripts/trace_gaps.py` reads the latter
and prints how long the devices were idle between steps.
"""

import jax


class StepProfiler:
  """Call `after_step(step)` after each dispatched step; `close()` at the end."""
  def __init__(self, workdir: str, start_step: int, num_steps: int, warmup: int = 10):
    self.workdir, self.num_steps = workdir, num_steps
    self.first, self.tracing = start_step + warmup, False

  def after_step(self, step: int, state) -> None:
    if not self.num_steps:
      return
    if step == self.first:
      jax.block_until_ready(state)  # the trace starts between two steps
      jax.profiler.start_trace(self.workdir, create_perfetto_trace=True)
      self.tracing = True
    elif self.tracing and step == self.first + self.num_steps:
      self.close(state)

  def close(self, state=None) -> None:
    if self.tracing:
      jax.block_until_ready(state)  # the traced steps' device work, whole
      jax.profiler.stop_trace()
      self.tracing = False
