#!/usr/bin/env bash
# Writes the first shipped model (v1, `shipped@8000`, the default until
# 2026-12-02) from this repository's history into DIR, for comparison:
#   bash scripts/get_v1_model.sh models/v1
#   im2latex-jax predict --workdir models/v1 image.png
set -euo pipefail
OUT=${1:?usage: get_v1_model.sh DIR}
V1_COMMIT=8c54d1f
cd "$(dirname "$0")/.."
if ! git cat-file -e "$V1_COMMIT^{commit}" 2>/dev/null; then
  echo "error: commit $V1_COMMIT (v1) is not in this clone (a shallow or exported copy?); run 'git fetch --unshallow' or clone the repository with its history." >&2
  exit 2
fi
mkdir -p "$OUT"
git archive "$V1_COMMIT" im2latex_jax/assets/model | tar -x --strip-components=3 -C "$OUT"
echo "v1 (shipped@8000, commit $V1_COMMIT) -> $OUT"
