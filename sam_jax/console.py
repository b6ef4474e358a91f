"""What the binaries show on the console: sam_jax's own lines, and a progress display.

`quiet_logs()` keeps sam_jax's INFO lines and the warnings and errors of everyone but the
libraries that report through the run (Orbax, asyncio: a failed save or restore ends in
the run's own line, not in their tracebacks), and drops the INFO chatter of Orbax (40-60
lines per checkpoint), TFDS, JAX, clu and TensorFlow's C++ start-up (`verbose=True` keeps
everything, as absl would).

`Progress` shows step/total, epoch, steps/s, ETA and the latest train and test metrics:
on a terminal as one tqdm line kept below the log lines; in a log file (stderr not a
terminal) as a plain log line every `log_every_steps`, without control characters.
"""

import contextlib
import logging as python_logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback as traceback_module

import tqdm
from absl import logging

# Warnings that are not news: Orbax on every resume of a checkpoint it wrote itself, TFDS
# before the offline digits are written the first time.
_EXPECTED_WARNINGS = ("Metadata file does not exist", "has no dataset_info.json")
_OURS = f"{os.sep}sam_jax{os.sep}"
# Libraries whose failures reach sam_jax as exceptions that it reports in its own line.
_REPORTED_THROUGH_US = (f"{os.sep}orbax{os.sep}", f"{os.sep}asyncio{os.sep}")
# What TensorFlow's C++ prints as it loads, whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21).
_NATIVE_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|"
                           r"I\d{4} [\d:. ]+ \d+ port\.cc:\d+\] oneDNN custom operations")


class QuietFilter(python_logging.Filter):
  """INFO and below from sam_jax only; warnings and errors from everyone but Orbax and
  asyncio."""
  def filter(self, record: python_logging.LogRecord) -> bool:
    if any(library in record.pathname for library in _REPORTED_THROUGH_US):
      return False
    if record.levelno >= python_logging.WARNING:
      return not any(text in record.getMessage() for text in _EXPECTED_WARNINGS)
    return _OURS in record.pathname


def quiet_logs(verbose: bool = False) -> None:
  """Filters the log as the module docstring says; call before TensorFlow is imported.

  Also drops what Orbax's and TensorStore's background work prints outside the log
  (through `sys.excepthook` and `sys.unraisablehook`) when a save or a restore fails: "Event
  loop is closed" once Orbax's loop has gone, exceptions of its coroutines that nobody
  awaits any more. The run reports the failure itself, in one line.
  """
  if verbose:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF and XLA C++: warnings and up
  logging.get_absl_handler().addFilter(QuietFilter())
  shown, unraisable = sys.excepthook, sys.unraisablehook

  def reported_by_the_run(value) -> bool:
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return True
    frames = traceback_module.extract_tb(getattr(value, "__traceback__", None))
    return any(library in frame.filename for frame in frames for library in _REPORTED_THROUGH_US)

  def excepthook(kind, value, traceback):
    if not reported_by_the_run(value):
      shown(kind, value, traceback)

  def unraisablehook(report):
    if not reported_by_the_run(report.exc_value):
      unraisable(report)

  sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


@contextlib.contextmanager
def native_noise_filtered(verbose: bool = False):
  """Holds back what native code writes to stderr (file descriptor 2) while heavy
  libraries load, and passes on every line of it but TensorFlow's start-up notices."""
  if verbose:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      for line in held.read().decode(errors="replace").splitlines(keepends=True):
        if not _NATIVE_NOISE.match(line):
          sys.stderr.write(line)
      sys.stderr.flush()


@contextlib.contextmanager
def announced_if_slow(what: str, after_seconds: float = 5.0):
  """Says `what` is under way once the block has run `after_seconds`, and at its end how
  long it took: a long compilation is not a silent wait."""
  started = time.monotonic()

  def announce():  # here, not logging.info itself: the quiet filter keeps sam_jax's lines
    logging.info("%s (a minute or more for large models)...", what)

  timer = threading.Timer(after_seconds, announce)
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()
    if (took := time.monotonic() - started) >= after_seconds:
      logging.info("%s: done in %.1f s.", what, took)


class _AboveTheBar:
  """A stream that clears tqdm's line before each write and redraws it after, so that
  log lines scroll above the progress display instead of through it."""
  def __init__(self, stream):
    self.stream = stream

  def write(self, text: str) -> None:
    with tqdm.tqdm.external_write_mode(file=self.stream):
      self.stream.write(text)

  def __getattr__(self, name):
    return getattr(self.stream, name)


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _metrics(prefix: str, values: dict[str, float]) -> str:
  shown = [
      f"{name} {values[f'{prefix}_{name}']:.4g}" for name in ("loss", "error")
      if f"{prefix}_{name}" in values
  ]
  return f"{prefix} {' '.join(shown)}" if shown else ""


class Progress:
  """The training run's progress, shown as the module docstring says."""
  def __init__(self, total_steps: int, steps_per_epoch: int, start_step: int, enabled: bool = True,
               stream=None):
    self.total, self.per_epoch, self.step = total_steps, steps_per_epoch, start_step
    self.enabled, self.stream = enabled, stream or sys.stderr
    self.latest: dict[str, float] = {}
    self.window = None  # (step, time) of the previous report: steps/s since then
    self.bar = None
    if enabled and self.stream.isatty():
      self.bar = tqdm.tqdm(
          total=total_steps, initial=start_step, file=self.stream, dynamic_ncols=True, unit="step",
          bar_format=("{desc} {percentage:3.0f}%|{bar}| {n}/{total} "
                      "[{elapsed}<{remaining}, {rate_fmt}{postfix}]"))
      handler = logging.get_absl_handler().python_handler
      self._stream, handler.stream = handler.stream, _AboveTheBar(handler.stream)

  def _latest(self) -> str:
    return "; ".join(filter(None, (_metrics(split, self.latest) for split in ("train", "test"))))

  def update(self, step: int) -> None:
    """After each step (cheap: no device synchronisation, no metrics formatted)."""
    if self.window is None:  # the first step returns once compiled: time from there
      self.window = (step, time.monotonic())
    self.step = step
    if self.bar is not None:
      self.bar.set_description_str(
          f"epoch {step / self.per_epoch:.1f}/"
          f"{self.total / self.per_epoch:.4g}", refresh=False)
      self.bar.update(step - self.bar.n)

  def show(self, metrics: dict[str, float]) -> None:
    """New metrics (an evaluation's) for the display, without a line of their own."""
    self.latest.update(metrics)
    if self.bar is not None:
      self.bar.set_postfix_str(self._latest(), refresh=False)

  def report(self, step: int, metrics: dict[str, float]) -> float | None:
    """New metrics at `step`; returns the steps/s since the previous report (None right
    after the first step). Without a terminal, logs one line: step/total, epoch, steps/s,
    ETA and the latest metrics."""
    self.show(metrics)
    self.update(step)
    assert self.window is not None  # update() has set it
    (last_step, last_time), now = self.window, time.monotonic()
    rate = (step - last_step) / max(now - last_time, 1e-9) if step > last_step else None
    self.window = (step, now)
    if self.enabled and self.bar is None:
      speed = (f"{rate:.2f} steps/s, ETA {_duration((self.total - step) / max(rate, 1e-9))}"
               if rate else "compiled")
      shown = self._latest()
      logging.info("step %d/%d (%d%%), epoch %.1f/%.4g, %s%s", step, self.total,
                   100 * step // self.total, step / self.per_epoch, self.total / self.per_epoch,
                   speed, f": {shown}" if shown else "")
    return rate

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      logging.get_absl_handler().python_handler.stream = self._stream
      self.bar = None


@contextlib.contextmanager
def progress(total_steps: int, steps_per_epoch: int, start_step: int, enabled: bool = True):
  """A `Progress` closed on the way out (the terminal's line ends cleanly on errors)."""
  shown = Progress(total_steps, steps_per_epoch, start_step, enabled)
  try:
    yield shown
  finally:
    shown.close()


class Tally:
  """Counted work without steps (the analyses' Hessian-vector products, m values): a tqdm
  bar on a terminal, else a log line every `every_seconds` and one at the end."""
  def __init__(self, description: str, total: int, unit: str, every_seconds: float = 15.0,
               stream=None):
    self.description, self.total, self.unit = description, total, unit
    self.done, self.every = 0, every_seconds
    self.start = self.last_line = time.monotonic()
    stream = stream or sys.stderr
    self.bar = (
        tqdm.tqdm(total=total, desc=description, unit=f" {unit}", file=stream, dynamic_ncols=True)
        if stream.isatty() else None)

  def advance(self, count: int = 1) -> None:
    self.done += count
    if self.bar is not None:
      self.bar.update(count)
    elif self.done < self.total and time.monotonic() - self.last_line >= self.every:
      self._line()

  def _line(self, final: bool = False) -> None:
    self.last_line = now = time.monotonic()
    rate = self.done / max(now - self.start, 1e-9)
    left = "" if final else (f", ETA {_duration((self.total - self.done) / rate)}" if rate else "")
    logging.info("%s: %d/%d %s in %s (%.2f/s)%s", self.description, self.done, self.total,
                 self.unit, _duration(now - self.start), rate, left)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    else:
      self._line(final=True)


@contextlib.contextmanager
def tally(description: str, total: int, unit: str):
  """A `Tally`, closed (with its last line) on the way out."""
  counted = Tally(description, total, unit)
  try:
    yield counted
  finally:
    counted.close()
