#!/usr/bin/env bash
# Vendors the web page's assets (Bootstrap, KaTeX) from the npm registry into
# im2latex_jax/serve/static/vendor/, so the page never loads from a CDN.
#
# Reproducible: versions are pinned below and each tarball's integrity is
# checked by npm. Only the dist files the page uses are copied, plus licenses;
# KaTeX keeps only its woff2 fonts (every browser we target reads woff2).
#
# Usage: scripts/fetch_web_assets.sh
set -euo pipefail

BOOTSTRAP_VERSION=5.3.9
KATEX_VERSION=0.19.1

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/im2latex_jax/serve/static/vendor"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

cd "$TMP"
npm pack --silent "bootstrap@$BOOTSTRAP_VERSION" "katex@$KATEX_VERSION" >/dev/null
mkdir bootstrap katex
tar -xzf "bootstrap-$BOOTSTRAP_VERSION.tgz" -C bootstrap --strip-components=1
tar -xzf "katex-$KATEX_VERSION.tgz" -C katex --strip-components=1

rm -rf "$DEST"
mkdir -p "$DEST/bootstrap" "$DEST/katex/fonts"

cp bootstrap/dist/css/bootstrap.min.css \
   bootstrap/dist/js/bootstrap.bundle.min.js \
   bootstrap/LICENSE "$DEST/bootstrap/"
cp katex/dist/katex.min.css katex/dist/katex.min.js katex/LICENSE "$DEST/katex/"
cp katex/dist/fonts/*.woff2 "$DEST/katex/fonts/"

# katex.min.css lists woff2, woff and ttf sources per font; keep only woff2 so
# the browser never asks for files we do not ship.
python3 - "$DEST/katex/katex.min.css" <<'PY'
import re, sys
path = sys.argv[1]
css = open(path, encoding="utf-8").read()
css = re.sub(r',url\(fonts/[^)]+\.(?:woff|ttf)\) format\("(?:woff|truetype)"\)', "", css)
open(path, "w", encoding="utf-8").write(css)
PY

cat > "$DEST/VERSIONS" <<VERSIONS
bootstrap $BOOTSTRAP_VERSION (npm)
katex $KATEX_VERSION (npm)
VERSIONS
du -sh "$DEST"
