#!/usr/bin/env bash
# Installs everything im2latex-jax needs on a fresh Debian/Ubuntu machine:
# TeX Live (rendering, image metrics), Chromium (browser test) and the Python
# package with its extras. Idempotent: what is already there is skipped.
#
#   bash scripts/setup.sh            # package + serve/sweep/notebook extras
#   bash scripts/setup.sh --test     # also the test extras
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="all"
[[ "${1:-}" == "--test" ]] && EXTRAS="all,test"

APT_PKGS=(texlive-latex-base texlive-latex-recommended dvipng poppler-utils chromium)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  if command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: no apt-get; install ${missing[*]} by hand (rendering and the browser test need them)." >&2
  fi
fi

PY=${PYTHON:-python3}
echo "setup: pip install -e .[$EXTRAS]"
$PY -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]" 2>&1 | grep -v "Running pip as the 'root' user" || true
$PY -c "import im2latex_jax, jax, flax, tensorflow_datasets" >/dev/null
echo "setup: ok"
