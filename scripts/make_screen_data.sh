#!/usr/bin/env bash
# Screenshot-like training data: N formulas of the reduced-label protocol's
# training part (train + validation[:7475]; never the holdout) drawn by each
# renderer (pdflatex fonts, KaTeX, MathJax) with random presentations, stored
# at the dataset's scale (`render-screens --as dataset`), then merged with the
# real data into one official-layout dir that `train` reads.
#
#   bash scripts/make_screen_data.sh DATA OUT [N=5000] [SEED=0]
#   im2latex-jax train --config configs/im2markup.py:reduced \
#       --config.input.manual_dir=OUT/mixed --workdir W
set -euo pipefail
DATA=${1:?usage: make_screen_data.sh DATA OUT [N] [SEED]}
OUT=${2:?usage: make_screen_data.sh DATA OUT [N] [SEED]}
N=${3:-5000}
SEED=${4:-0}
BIN=${IM2LATEX_BIN:-im2latex-jax}
mkdir -p "$OUT"
adds=(--add "$DATA")
for engine in pdflatex katex mathjax; do
  if [[ ! -f "$OUT/$engine/im2latex_train_filter.lst" ]]; then
    "$BIN" render-screens --engine "$engine" --seed "$SEED" --n "$N" \
      --formulas "$DATA/im2latex_formulas.norm.lst" \
      --split-list "$DATA/im2latex_train_filter.lst" \
      --split-list "$DATA/im2latex_validate_filter.lst:0:7475" \
      --out "$OUT/$engine" 2> "$OUT/$engine.stderr" | tee "$OUT/$engine.log"
  fi
  adds+=(--add "$OUT/$engine:train")
done
rm -rf "$OUT/mixed"
"$BIN" merge-data --out "$OUT/mixed" "${adds[@]}"
