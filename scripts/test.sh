#!/usr/bin/env bash
# Installs the project with its test extras (in .venv, see setup.sh) and runs
# the whole test suite.
#   bash scripts/test.sh [pytest args]
# Two pytest-xdist workers (PYTEST_WORKERS=N to change, 0 for none), one test
# file per worker at a time (--dist loadfile: a module's fixtures are built
# once). Most of the suite is single-threaded compiles and subprocess start-up,
# so two workers on 2 cores take 14-26 min instead of ~36 (README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
VENV=${IM2LATEX_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/im2latex_jax/xla-tests}
export TEST_ARTIFACTS_DIR=${TEST_ARTIFACTS_DIR:-$PWD/artifacts}
mkdir -p "$TEST_ARTIFACTS_DIR"
WORKERS=${PYTEST_WORKERS:-2}
XDIST=()
if [ "$WORKERS" != 0 ]; then XDIST=(-n "$WORKERS" --dist loadfile); fi
"$VENV/bin/python" -m pytest -q --durations=15 "${XDIST[@]}" "$@"
