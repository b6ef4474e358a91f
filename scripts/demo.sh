#!/usr/bin/env bash
# Sets up .venv if needed, then trains a small WideResNet with SAM on the offline digits.
# Usage: bash scripts/demo.sh [WORKDIR] [--config.FIELD=VALUE ...]
# WORKDIR is relative to where you run it; by default workdirs/digits_demo in the checkout.
set -euo pipefail
here="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
workdir="${1:-workdirs/digits_demo}"
if [ $# -ge 1 ] && [ "${workdir#/}" = "$workdir" ]; then
  workdir="$here/$workdir"
fi
exec python -m sam_jax.train --config=configs/digits_demo.py --workdir="$workdir" "${@:2}"
