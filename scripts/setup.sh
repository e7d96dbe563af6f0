#!/usr/bin/env bash
# Installs everything im2latex-jax needs on a fresh Debian/Ubuntu machine:
# TeX Live with math fonts (rendering, image metrics), Chromium and librsvg
# (KaTeX/MathJax renderers, browser test), Node's MathJax, and the Python
# package with its extras in a project virtual environment, `.venv` (override
# with IM2LATEX_VENV). A distribution's own python3 refuses `pip install`
# outside a venv (PEP 668); a venv works with it and with pyenv/conda builds.
# Idempotent: what is already there is skipped.
#
#   bash scripts/setup.sh            # package + serve/sweep/notebook/render extras
#   bash scripts/setup.sh --test     # also the test extras
#
# Afterwards: `.venv/bin/im2latex-jax ...`, or `source .venv/bin/activate`.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="all"
[[ "${1:-}" == "--test" ]] && EXTRAS="all,test"
PY=${PYTHON:-python3}
VENV=${IM2LATEX_VENV:-.venv}

APT_PKGS=(texlive-latex-base texlive-latex-recommended texlive-fonts-recommended
          dvipng poppler-utils chromium librsvg2-bin fonts-dejavu-core)
# Debian ships venv's pip bootstrap separately (python3-venv).
if [[ ! -x "$VENV/bin/python" ]] && ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  APT_PKGS+=(python3-venv)
fi
command -v npm >/dev/null || APT_PKGS+=(nodejs npm)
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

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating the virtual environment $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
echo "setup: pip install -e .[$EXTRAS] into $VENV"
# (This image's pip config names a local index folder that may be absent; its
# one-line warnings per package say nothing about the install.)
"$VPY" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]" 2>&1 \
  | { grep -v "^WARNING: Location 'file:" || true; }
"$VPY" -c "import im2latex_jax, jax, flax, tensorflow_datasets" >/dev/null

# MathJax for the `mathjax` renderer (node, SVG output), next to the venv's
# Python so that im2latex_jax.datagen finds it (see renderers.node_modules_dir).
NODE_DIR="$VENV/lib/im2latex-node"
MATHJAX_VERSION=3.2.2
if command -v npm >/dev/null && [[ ! -f "$NODE_DIR/node_modules/mathjax-full/package.json" ]]; then
  echo "setup: npm install mathjax-full@$MATHJAX_VERSION into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  # Only the mathjax renderer needs it: a failed install is a warning. Node
  # trusts only its bundled CAs; adding the system's (as pip and apt use) lets
  # it through a TLS-inspecting proxy without a ~/.npmrc cafile.
  SYSTEM_CA=/etc/ssl/certs/ca-certificates.crt
  if [[ -z "${NODE_EXTRA_CA_CERTS:-}" && -f $SYSTEM_CA ]]; then export NODE_EXTRA_CA_CERTS=$SYSTEM_CA; fi
  timeout 600 npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" \
      "mathjax-full@$MATHJAX_VERSION" >/dev/null \
    || echo "setup: warning: npm install mathjax-full failed; the mathjax renderer (render-screens --engine mathjax, the benchmark's mathjax rows) is unavailable until it succeeds" >&2
fi
echo "setup: ok (run commands as $VENV/bin/im2latex-jax, or 'source $VENV/bin/activate' first)"
