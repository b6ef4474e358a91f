"""The one error type for bad input: what a user asked for cannot run, and why; and
`Stopped`, a run that stopped on a signal (not an error: its binary exits 0).

Raised by validation (config values, the replica layout, datasets and the data on
disk, checkpoints that must fit the model, `init_from`, a writable workdir), before a
run writes anything; and by the faults a run is expected to meet, once it has made sure
no good checkpoint is lost (NaN/Inf in a step, a checkpoint that could not be written).
The binaries print it as one line and exit with status 2; every other exception is a
bug or an environment failure and keeps its traceback.
"""

import sys
from typing import NoReturn


class UsageError(ValueError):
  """Bad input, with a one-line message saying what is wrong and how to fix it."""


class Stopped(Exception):
  """A run stopped on SIGTERM or Ctrl-C after saving a checkpoint; the message says where."""


def exit_with_usage_error(program: str, reason: str) -> NoReturn:
  """How every binary ends on bad input: `program: error: reason` on stderr, status 2."""
  print(f"{program}: error: {reason}", file=sys.stderr)
  sys.exit(2)
