#!/usr/bin/env bash
# The checks CI runs before the tests, and the pre-commit hooks run: lint (ruff), format
# (yapf: Google style at 2 spaces), types (pyright: basic, strict on the core). Sets up
# .venv if needed. `--fix` first applies ruff's safe fixes and yapf's formatting.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
formatted=(sam_jax scripts tests configs docs)
if [ "${1:-}" = "--fix" ]; then
  ruff check --fix --quiet . || true
  yapf --in-place --recursive --parallel "${formatted[@]}"
fi
echo "check: ruff (lint)"
ruff check --output-format concise .
echo "check: yapf (format)"
if ! yapf --diff --recursive --parallel "${formatted[@]}"; then
  echo "check: the files above are not formatted: bash scripts/check.sh --fix formats them." >&2
  exit 1
fi
echo "check: pyright (types)"
pyright --project .  # this checkout's pyproject.toml, whatever lies above it
pre-commit validate-config .pre-commit-config.yaml
