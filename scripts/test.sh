#!/usr/bin/env bash
# Sets up .venv if needed, runs the checks (scripts/check.sh: lint, format, types), then the
# whole test suite on the CPU (8 virtual devices per process), one worker per core (at most
# 4), tests shared out as workers free up, then builds the documentation (scripts/docs.sh:
# warnings are errors, the notebooks execute).
# Extra arguments go to pytest and skip the docs build: `-m "not slow"` is the developer
# loop, `-n 0` one process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
bash scripts/check.sh
python -m pytest -q -n auto --maxprocesses=4 --dist worksteal tests "$@"
if [ "$#" -eq 0 ]; then
  echo "test: the documentation (scripts/docs.sh)"
  bash scripts/docs.sh
fi
