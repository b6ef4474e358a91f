"""How long the devices waited between train steps, from a `config.profile_steps` trace.

    python scripts/trace_gaps.py WORKDIR     # the latest trace under WORKDIR/plugins/profile

Reads the trace (`*.trace.json.gz`) on CPU, where each compiled program's execution is one
`ThunkExecutor::Execute (wait for completion)` event (GPU and TPU traces name theirs
otherwise: open those in TensorBoard's profile plugin). Prints how long the executions
took and how long no execution ran between them.
"""

import glob
import gzip
import json
import os
import statistics
import sys

WHOLE_PROGRAM = ("ThunkExecutor::Execute (wait for completion)",)


def executions(trace: dict) -> list[tuple[float, float]]:
  """(start, end) in ms of every whole-program execution, by start, merged over threads."""
  spans = sorted((e["ts"] / 1e3, (e["ts"] + e["dur"]) / 1e3)
                 for e in trace["traceEvents"]
                 if e.get("ph") == "X" and e.get("name") in WHOLE_PROGRAM)
  merged = []
  for start, end in spans:
    if merged and start <= merged[-1][1]:
      merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
    else:
      merged.append((start, end))
  return merged


def main_with(argv: list[str]) -> None:
  if len(argv) != 1:
    sys.exit("usage: " + (__doc__ or "").split("\n\n")[1].strip())
  files = sorted(glob.glob(os.path.join(argv[0], "plugins", "profile", "*", "*.trace.json.gz")))
  if not files:
    sys.exit(f"No trace in {argv[0]}/plugins/profile: train with "
             "--config.profile_steps=N first.")
  with gzip.open(files[-1]) as f:
    spans = executions(json.load(f))
  busy = [end - start for start, end in spans]
  gaps = [nxt[0] - end for (_, end), nxt in zip(spans, spans[1:])]
  print(f"{files[-1]}: {len(spans)} executions (steps and the metrics' small programs)")
  print(f"busy per execution: median {statistics.median(busy):.2f} ms, "
        f"total {sum(busy):.1f} ms")
  if gaps:
    span = spans[-1][1] - spans[0][0]
    print(f"idle between executions: median {statistics.median(gaps):.3f} ms, "
          f"max {max(gaps):.3f} ms, total {sum(gaps):.1f} ms of {span:.1f} ms "
          f"({100 * sum(gaps) / span:.1f}% idle)")


if __name__ == "__main__":
  main_with(sys.argv[1:])
