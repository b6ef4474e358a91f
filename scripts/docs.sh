#!/usr/bin/env bash
# Builds the documentation site into docs/_build/html (sets up .venv if needed): Sphinx
# with warnings as errors, so a broken internal link, a docstring that does not parse or a
# notebook cell that raises fails the build. The notebooks execute on the CPU.
# Every page is read afresh (-E), so a warning is never hidden by an earlier build.
# Open docs/_build/html/index.html. Extra arguments go to sphinx-build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
# What TensorFlow's C++ prints as it loads (the API pages import its readers) and each
# notebook kernel's notice about its local TCP connection.
noise="All log messages before absl::InitializeLog|oneDNN custom operations are on|Kernel is running over TCP"
sphinx-build -E -W --keep-going -q -b html docs docs/_build/html "$@" 2>&1 |
  { grep -v -E "$noise" || true; }
echo "docs: docs/_build/html/index.html"
