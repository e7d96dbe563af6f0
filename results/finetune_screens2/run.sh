#!/usr/bin/env bash
# The second fine-tuning run of issue "Read real screenshots (3/3)" (2 CPU
# cores, one session): data, training, weight-space blends with v1, and the
# figures of results/finetune_screens2/README.md. Every step is seeded; a
# rerun skips what exists and `train` resumes from its last checkpoint.
#
#   bash results/finetune_screens2/run.sh [DATA=../shared/data/im2latex100k] [WORK=/tmp/ft2] [STEPS=1040]
#
# (The recorded run was started with num_train_steps=2000 and stopped by
# SIGTERM after step 1040, 86 min; STEPS=1040 trains the same steps.)
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-../shared/data/im2latex100k}
W=${2:-/tmp/ft2}
STEPS=${3:-1040}
BIN=${IM2LATEX_BIN:-.venv/bin/im2latex-jax}
PY=${PYTHON:-.venv/bin/python}
SPLITS=(--split-list "$D/im2latex_train_filter.lst" --split-list "$D/im2latex_validate_filter.lst:0:7475")
mkdir -p "$W"

# 1. Screenshot-like renders of training formulas (never the holdout), stored
#    at the dataset's glyph size: pdflatex twice (six font families; the other
#    fonts are what v1 reads worst), KaTeX, MathJax. ~4 min on 2 cores.
render() {  # engine seed n dir
  [[ -f "$W/$4/im2latex_train_filter.lst" ]] || "$BIN" render-screens --engine "$1" --seed "$2" \
      --n "$3" --workers 1 --formulas "$D/im2latex_formulas.norm.lst" "${SPLITS[@]}" --out "$W/$4"
}
render pdflatex 3 4000 pdflatex
render pdflatex 4 6000 pdflatex4
render katex 3 3000 katex
render mathjax 3 3000 mathjax
[[ -d "$W/mixed" ]] || "$BIN" merge-data --out "$W/mixed" --add "$D" --add "$W/pdflatex:train" \
    --add "$W/pdflatex4:train" --add "$W/katex:train" --add "$W/mathjax:train"

# 2. Fine-tune v1 (configs/screens.py, fresh Adam). v1 was the shipped model
#    then; it comes from the repository's history now.
V1="$W/v1"
[[ -f "$V1/params.msgpack" ]] || bash scripts/get_v1_model.sh "$V1"
"$BIN" train --config configs/screens.py --workdir "$W/run" --config.init_from="$V1" \
    --config.input.manual_dir="$W/mixed" --config.optim.lr=1e-4 --config.optim.warmup_steps=50 \
    --config.eval_every_steps=100 --config.eval_max_examples=320 \
    --config.num_train_steps="$STEPS" --config.log_every_steps=10

# 3. Candidates: the run's last checkpoint and its blends with v1 (WiSE-FT).
"$BIN" export-model --workdir "$W/run" --step latest --out "$W/m/a1.0"
for a in ${ALPHAS:-0.75 0.5 0.4}; do
  "$BIN" export-model --workdir "$W/run" --step latest --blend "$V1" --alpha "$a" --out "$W/m/a$a"
done

# 4. Each candidate: clean holdout (greedy) and the benchmark conditions v1
#    reads worst (50 formulas each, the same images for every model); the
#    chosen blend (alpha 0.4, the default model since 2026-12-02) with image
#    metrics on the holdout.
HARD=clean,katex-13px-inline,pdf-times-10pt-150dpi,pdf-txfonts-12pt-110dpi,pdf-palatino-11pt-120dpi,pdf-pxfonts-10pt-144dpi,pdf-euler-10pt-150dpi
CHOSEN=a0.4
for m in "$W"/m/*; do
  extra=()
  [[ $(basename "$m") == "$CHOSEN" ]] && extra=(--image-metrics)
  "$BIN" evaluate --workdir "$m" --split 'validation[7475:]' --manual-dir "$D" --beam 1 "${extra[@]}"
  mkdir -p "$W/hard/$(basename "$m")"
  "$BIN" robustness --data "$D" --n 50 --conditions "$HARD" --workdir "$m" --out "$W/hard/$(basename "$m")"
done

# 5. The chosen blend on every benchmark condition (50 formulas each) and the
#    before/after table against v1's full-benchmark run.
"$BIN" robustness --data "$D" --n 50 --workdir "$W/m/$CHOSEN" --out "$W/full"
"$PY" results/robustness/compare.py results/robustness/v2 "$W/full"
