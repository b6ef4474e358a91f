"""The one error type for bad input: what a user asked for cannot run, and why; and
`Stopped`, a run that stopped on a signal (not an error: its binary exits 0).

Raised by validation (config values, the replica layout, datasets and the data on
disk, checkpoints that must fit the model, `init_from`, a writable workdir), before a
run writes anything; and by the faults a run is expected to meet, once it has made sure
no good checkpoint is lost (NaN/Inf in a step, a checkpoint that could not be written).
The binaries print it as one line and exit with status 2; every other exception is a
bug or an environment failure and keeps its traceback.
"""

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class UsageError(ValueError):
  """Bad input, with a one-line message saying what is wrong and how to fix it."""


class Stopped(Exception):
  """A run stopped on SIGTERM or Ctrl-C after saving a checkpoint; the message says where."""


def exit_with_usage_error(program: str, reason: str) -> NoReturn:
  """How every binary ends on bad input: `program: error: reason` on stderr, status 2."""
  print(f"{program}: error: {reason}", file=sys.stderr)
  sys.exit(2)


def run_binary(program: str, main: Callable[[list[str]], Any], **run_options: Any) -> NoReturn:
  """absl's `app.run(main, **run_options)`, then exit at once with its status.

  By then the run's files are written, flushed and closed; the interpreter's own teardown
  (TensorFlow's and Orbax's threads, a tf.data iterator) can take seconds more, which
  nobody waits for. A second Ctrl-C, which stops a run at once, is one line and status 130.
  """
  # pylint: disable-next=import-outside-toplevel  (absl: only in the binaries)
  from absl import app, logging
  try:
    app.run(main, **run_options)
    status = 0
  except SystemExit as e:
    status = e.code
  except KeyboardInterrupt:
    print(
        f"{program}: stopped at once by a second Ctrl-C; the checkpoints written before "
        "are intact.", file=sys.stderr)
    status = 130
  if status is not None and not isinstance(status, int):  # sys.exit("message")
    print(status, file=sys.stderr)
    status = 1
  if "jax" in sys.modules and sys.modules["jax"].distributed.is_initialized():
    sys.modules["jax"].distributed.shutdown()  # with the other processes, as at exit
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status or 0)
