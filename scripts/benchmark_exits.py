"""How long the training binary takes to exit after its last line: short digits runs,
alternately fresh and resumed (22 steps, then 22 more), each timed from the timestamp of
the last line it logs (after its last checkpoint is written) to its exit.

    python scripts/benchmark_exits.py --runs 20
"""

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STAMP = re.compile(r"^[IWE]\d{4} (\d\d:\d\d:\d\d\.\d+) ", re.MULTILINE)


def seconds_after_last_line(stderr: str, exited: float) -> float:
  """From the last absl line's timestamp (local time, today) to `exited` (time.time())."""
  last = _STAMP.findall(stderr)[-1]
  clock = datetime.datetime.strptime(last, "%H:%M:%S.%f").time()
  logged = datetime.datetime.combine(datetime.date.fromtimestamp(exited), clock).timestamp()
  return exited - logged


def main():
  parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
  parser.add_argument("--runs", type=int, default=20)
  args = parser.parse_args()
  workdir = tempfile.mkdtemp(prefix="sam_jax_exits_")
  times = []
  try:
    for run in range(args.runs):
      fresh = run % 2 == 0
      if fresh:
        shutil.rmtree(workdir, ignore_errors=True)
      done = subprocess.run([
          sys.executable, "-m", "sam_jax.train", "--config=configs/digits_demo.py",
          f"--workdir={workdir}", f"--config.num_train_steps={22 if fresh else 44}",
          "--config.eval_every_steps=22", "--allow_config_changes"
      ], cwd=ROOT, capture_output=True, text=True, check=True)
      times.append(seconds_after_last_line(done.stderr, time.time()))
      print(
          f"run {run + 1:>2} ({'fresh' if fresh else 'resumed'}): exited {times[-1]:.2f} s "
          "after its last line", flush=True)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  print(f"slowest exit {max(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s")


if __name__ == "__main__":
  main()
