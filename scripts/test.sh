#!/usr/bin/env bash
# Sets up .venv if needed, runs the checks (scripts/check.sh: lint, format, types), then the
# whole test suite on the CPU (8 virtual devices per process), one worker per core (at most
# 4), tests shared out as workers free up, and builds the documentation (scripts/docs.sh:
# warnings are errors, the notebooks execute) beside them: mostly one core's work, it
# fills what the checks and the tests leave idle. Its output follows the tests'.
# Extra arguments go to pytest and skip the docs build: `-m "not slow"` is the developer
# loop, `-n 0` one process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
docs_pid=""
if [ "$#" -eq 0 ]; then
  docs_log="$(mktemp)"
  setsid bash scripts/docs.sh > "$docs_log" 2>&1 &  # its own process group: stopped as one
  docs_pid=$!
  trap 'kill -- -"$docs_pid" 2>/dev/null || true; rm -f "$docs_log"' EXIT
fi
bash scripts/check.sh
python -m pytest -q -n auto --maxprocesses=4 --dist worksteal tests "$@"
if [ -n "$docs_pid" ]; then
  echo "test: the documentation (scripts/docs.sh)"
  status=0
  wait "$docs_pid" || status=$?
  cat "$docs_log"
  exit "$status"
fi
