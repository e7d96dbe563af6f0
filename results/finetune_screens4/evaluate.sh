#!/usr/bin/env bash
# Evaluates the candidates of run.sh: the run's last step and its blends with
# v1 (WiSE-FT), each on the clean holdout (validation[7475:], 1,000, greedy)
# and on the conditions v1 reads worst (50 formulas each: the same images as
# results/finetune_screens2/hard and ../finetune_screens3).
#
#   ALPHAS="0.8 0.6" bash results/finetune_screens4/evaluate.sh [DATA] [WORK=/tmp/ft4] [STEP=latest]
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-../shared/data/im2latex100k}
W=${2:-/tmp/ft4}
STEP=${3:-latest}
BIN=${IM2LATEX_BIN:-.venv/bin/im2latex-jax}
HARD=clean,katex-13px-inline,pdf-times-10pt-150dpi,pdf-txfonts-12pt-110dpi,pdf-palatino-11pt-120dpi,pdf-pxfonts-10pt-144dpi,pdf-euler-10pt-150dpi
for a in 1.0 ${ALPHAS:-}; do
  m="$W/m/s$STEP-a$a"
  if [[ ! -f "$m/params.msgpack" ]]; then
    if [[ "$a" == 1.0 ]]; then
      "$BIN" export-model --workdir "$W/run" --step "$STEP" --out "$m"
    else
      "$BIN" export-model --workdir "$W/run" --step "$STEP" --blend "$W/v1" --alpha "$a" --out "$m"
    fi
  fi
  [[ -f "$m/eval/validation_7475_beam1/metrics.json" ]] || "$BIN" evaluate --workdir "$m" \
      --split 'validation[7475:]' --manual-dir "$D" --beam 1
  [[ -f "$W/hard/$(basename "$m")/table.md" ]] || "$BIN" robustness --data "$D" --n 50 \
      --conditions "$HARD" --workdir "$m" --out "$W/hard/$(basename "$m")"
done
