#!/usr/bin/env bash
# The third fine-tuning run of issue "Read real screenshots (3/3)" (2 CPU
# cores, one session): continues the run of results/finetune_screens2 (its
# weights recovered from the v2 blend, unblend.py) on its data plus 5,000 more
# pdflatex renders in the five non-Computer-Modern math fonts, with a cosine
# learning rate down to 5 % and then blends with v1 again.
#
#   bash results/finetune_screens3/run.sh [DATA=../shared/data/im2latex100k] [WORK=/tmp/ft3] [STEPS=1200]
#   (STEPS=0: steps 1-2 only, the weights and the data)
#
# Every step is seeded; a rerun skips what exists and `train` resumes from its
# last checkpoint. Needs a clone with history (v1 via scripts/get_v1_model.sh)
# and v2 as shipped on 2026-12-02 (commit 1df4e83's im2latex_jax/assets/model).
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-../shared/data/im2latex100k}
W=${2:-/tmp/ft3}
STEPS=${3:-1200}
BIN=${IM2LATEX_BIN:-.venv/bin/im2latex-jax}
PY=${PYTHON:-.venv/bin/python}
SPLITS=(--split-list "$D/im2latex_train_filter.lst" --split-list "$D/im2latex_validate_filter.lst:0:7475")
mkdir -p "$W"

# 1. The weights: v1, v2 (as of 1df4e83) and the fine-tuned run behind v2.
V1="$W/v1"
[[ -f "$V1/params.msgpack" ]] || bash scripts/get_v1_model.sh "$V1"
if [[ ! -f "$W/v2/params.msgpack" ]]; then
  mkdir -p "$W/v2"
  git archive 1df4e83 im2latex_jax/assets/model | tar -x -C "$W/v2" --strip-components=3
fi
[[ -f "$W/ft1040/params.msgpack" ]] || "$PY" results/finetune_screens3/unblend.py "$W/v2" "$V1" "$W/ft1040"

# 2. Data: finetune_screens2's renders (same seeds) + pdflatex seed 5 in the
#    fonts v2 reads worst (~1.5 min).
render() {  # engine seed n dir [extra args]
  [[ -f "$W/$4/im2latex_train_filter.lst" ]] || "$BIN" render-screens --engine "$1" --seed "$2" \
      --n "$3" --workers 1 --formulas "$D/im2latex_formulas.norm.lst" "${SPLITS[@]}" --out "$W/$4" "${@:5}"
}
render pdflatex 3 4000 pdflatex
render pdflatex 4 6000 pdflatex4
render katex 3 3000 katex
render mathjax 3 3000 mathjax
render pdflatex 5 5000 pdflatex5 --fonts times,txfonts,palatino,pxfonts,euler
[[ -d "$W/mixed" ]] || "$BIN" merge-data --out "$W/mixed" --add "$D" --add "$W/pdflatex:train" \
    --add "$W/pdflatex4:train" --add "$W/katex:train" --add "$W/mathjax:train" \
    --add "$W/pdflatex5:train"

[[ $STEPS == 0 ]] && exit 0   # data only (results/finetune_screens5/run.sh)

# 3. Continue training (fresh Adam, 50 warm-up steps, cosine 7e-5 -> 3.5e-6).
"$BIN" train --config configs/screens.py --workdir "$W/run" --config.init_from="$W/ft1040" \
    --config.input.manual_dir="$W/mixed" --config.optim.lr=7e-5 --config.optim.warmup_steps=50 \
    --config.optim.decay=cosine --config.optim.end_lr_factor=0.05 \
    --config.eval_every_steps=200 --config.eval_max_examples=320 \
    --config.num_train_steps="$STEPS" --config.log_every_steps=10

# 4. Candidates: the run's last step and blends with v1 (WiSE-FT), each on the
#    clean holdout (greedy) and on the conditions v1 reads worst (50 formulas
#    each: the same images as results/finetune_screens2/hard).
HARD=clean,katex-13px-inline,pdf-times-10pt-150dpi,pdf-txfonts-12pt-110dpi,pdf-palatino-11pt-120dpi,pdf-pxfonts-10pt-144dpi,pdf-euler-10pt-150dpi
[[ -f "$W/m/a1.0/params.msgpack" ]] || "$BIN" export-model --workdir "$W/run" --step latest --out "$W/m/a1.0"
for a in ${ALPHAS:-}; do
  [[ -f "$W/m/a$a/params.msgpack" ]] || "$BIN" export-model --workdir "$W/run" --step latest \
      --blend "$V1" --alpha "$a" --out "$W/m/a$a"
done
for m in "$W"/m/*; do
  n=$(basename "$m")
  "$BIN" evaluate --workdir "$m" --split 'validation[7475:]' --manual-dir "$D" --beam 1
  [[ -f "$W/hard/$n/table.md" ]] || "$BIN" robustness --data "$D" --n 50 --conditions "$HARD" \
      --workdir "$m" --out "$W/hard/$n"
done
