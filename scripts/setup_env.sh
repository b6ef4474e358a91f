# Creates .venv (Python 3.11) and installs sam_jax with its pinned [train,analysis,test,lint,docs]
# extras into it, once: later calls only re-install when pyproject.toml or requirements/
# change. Source it, `source scripts/setup_env.sh`: it leaves the environment activated,
# and on a failure it says why and returns 1 without closing your shell.

_sam_jax_setup() {
  local root venv python stamp want
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  venv="$root/.venv"
  python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  if [ -z "$python" ] || ! command -v "$python" >/dev/null; then
    echo "sam-jax: no Python found (${python:-none}): install Python 3.11 or set PYTHON=/path/to/python3.11." >&2
    return 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" || {
      echo "sam-jax: '$python -m venv' failed; install the venv module (e.g. apt-get install python3.11-venv)." >&2
      return 1
    }
  fi
  stamp="$venv/.installed"
  want="$(cat "$root/pyproject.toml" "$root"/requirements/*.txt | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "sam-jax: installing pinned dependencies into $venv (first run: a minute or two)..."
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip &&
      PYTHONWARNINGS=ignore "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$root[train,analysis,test,lint,docs]" || {
      echo "sam-jax: installing the dependencies failed (see pip's message above)." >&2
      return 1
    }
    echo "$want" > "$stamp"
  fi
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
}

_sam_jax_setup
_sam_jax_status=$?
unset -f _sam_jax_setup
if [ "$_sam_jax_status" -ne 0 ]; then
  unset _sam_jax_status
  return 1 2>/dev/null || exit 1  # sourced: back to the shell; run as a script: exit
fi
unset _sam_jax_status
