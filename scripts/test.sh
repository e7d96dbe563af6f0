#!/usr/bin/env bash
# Installs the project with its test extras (in .venv, see setup.sh) and runs
# the whole test suite.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
VENV=${IM2LATEX_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/im2latex_jax/xla-tests}
export TEST_ARTIFACTS_DIR=${TEST_ARTIFACTS_DIR:-$PWD/artifacts}
mkdir -p "$TEST_ARTIFACTS_DIR"
"$VENV/bin/python" -m pytest -q --durations=15 "$@"
