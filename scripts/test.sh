#!/usr/bin/env bash
# Sets up .venv if needed, runs the checks (scripts/check.sh: lint, format, types), then the
# whole test suite on the CPU (8 virtual devices per process), one worker per core (at most
# 4), tests shared out as workers free up.
# Extra arguments go to pytest: `-m "not slow"` is the developer loop, `-n 0` one process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
bash scripts/check.sh
exec python -m pytest -q -n auto --maxprocesses=4 --dist worksteal tests "$@"
