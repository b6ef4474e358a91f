"""What the binaries print (sam_jax/console.py): the quiet filter, the progress line of a
log file, and TensorFlow's start-up notices held back."""

import io
import logging as python_logging
import os
import re
import time

from sam_jax import console


def record(path: str, level: int, message: str) -> python_logging.LogRecord:
  return python_logging.LogRecord("absl", level, path, 1, message, None, None)


def test_the_quiet_filter_keeps_our_lines_and_everyones_warnings_but_orbaxs():
  keep = console.QuietFilter().filter
  ours = "/work/sam-jax/sam_jax/loop.py"
  tfds = "/venv/lib/python3.11/site-packages/tensorflow_datasets/core/dataset_builder.py"
  orbax = "/venv/lib/python3.11/site-packages/orbax/checkpoint/_src/futures/future.py"
  asyncio = "/usr/lib/python3.11/asyncio/base_events.py"
  assert keep(record(ours, python_logging.INFO, "WideResnet10x2 on digits: ..."))
  assert keep(record(ours, python_logging.WARNING, "The checkpoint at step 4 ... moved to"))
  assert not keep(record(tfds, python_logging.INFO, "Load dataset info from ..."))
  assert keep(record(tfds, python_logging.WARNING, "Something TFDS warns of"))
  assert not keep(
      record(tfds, python_logging.WARNING,
             "Variant folder /d/digits/1.0.0 has no dataset_info.json"))
  # A failed save's background tracebacks: the run says it in its own line instead.
  for path in (orbax, asyncio):
    for level in (python_logging.INFO, python_logging.WARNING, python_logging.ERROR):
      assert not keep(record(path, level, "_SignalingThread.run() raised an exception: ..."))


def test_a_log_file_gets_one_plain_line_per_report(monkeypatch, caplog):
  clock = iter([100.0, 110.0, 120.0])
  monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
  caplog.set_level(python_logging.INFO, logger="absl")
  shown = console.Progress(total_steps=44, steps_per_epoch=22, start_step=0,
                           stream=io.StringIO())  # not a terminal
  shown.update(1)  # compiled at t = 100
  shown.show({"test_loss": 0.3, "test_error": 0.05})
  assert shown.report(21, {"train_loss": 0.5, "train_error": 0.125}) == 2.0  # 20 steps, 10 s
  assert caplog.messages[-1] == ("step 21/44 (47%), epoch 1.0/2, 2.00 steps/s, ETA 0:11: "
                                 "train loss 0.5 error 0.125; test loss 0.3 error 0.05")
  shown.close()
  assert not any(c in "".join(caplog.messages) for c in "\r\x1b")


def test_tensorflows_start_up_notices_are_held_back_and_the_rest_passed_on(capfd):
  with console.native_noise_filtered():
    os.write(
        2, b"WARNING: All log messages before absl::InitializeLog() is called are "
        b"written to STDERR\nI0000 00:00:1795311400.480637   24826 port.cc:153] oneDNN "
        b"custom operations are on. You may see slightly different numerical results\n"
        b"E0000 something native went wrong\n")
  assert capfd.readouterr().err == "E0000 something native went wrong\n"


def test_a_slow_first_step_is_announced_and_timed_and_a_quick_one_is_not(caplog):
  caplog.set_level(python_logging.INFO, logger="absl")  # whatever verbosity a test left
  with console.announced_if_slow("Compiling the train step", after_seconds=0.05):
    time.sleep(0.3)
  with console.announced_if_slow("Compiling the evaluation step", after_seconds=5):
    pass
  messages = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
  assert messages[0] == "Compiling the train step (a minute or more for large models)..."
  assert re.fullmatch(r"Compiling the train step: done in 0\.\d s\.", messages[1])
  assert len(messages) == 2  # the quick one says nothing
