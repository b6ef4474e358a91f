#!/usr/bin/env bash
# Creates .venv (Python 3.11) and installs the pinned requirements and sam_jax into it,
# once: later calls only re-install when requirements.txt or setup.py change.
# Source it: `source scripts/setup_env.sh` leaves the environment activated.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
if [ -z "$python" ]; then
  echo "sam-jax: no python3.11 found; install Python 3.11 (or set PYTHON=/path/to/python)." >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || {
    echo "sam-jax: '$python -m venv' failed; install the venv module (e.g. apt-get install python3.11-venv)." >&2
    exit 1
  }
fi
stamp="$venv/.installed"
want="$(cat "$root/requirements.txt" "$root/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "sam-jax: installing pinned dependencies into $venv (first run: a minute or two)..."
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$root"
  echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
