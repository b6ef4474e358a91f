#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite on the CPU (8 virtual devices).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
exec python -m pytest -q tests "$@"
