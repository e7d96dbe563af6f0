#!/usr/bin/env bash
# The fourth fine-tuning run of issue "Read real screenshots (3/3)" (2 CPU
# cores, one session). Same start as finetune_screens3 (the run behind v2,
# recovered by ../finetune_screens3/unblend.py) and its renders, plus NEW
# formulas: 24,000 generated (gen-formulas --seed 1; v1 was trained on
# seed 0's) drawn dataset-style by `render` and 8,000 of them by the
# screenshot renderers. Hypothesis: the earlier runs lost ~1.5 BLEU-4 on the
# clean holdout because every image showed one of 10,475 formulas (the
# language model narrows); v1's own data had 16,485 generated ones.
#
#   bash results/finetune_screens4/run.sh [DATA=../shared/data/im2latex100k] [WORK=/tmp/ft4] [STEPS=600]
#
# Seeded; a rerun skips what exists and `train` resumes from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-../shared/data/im2latex100k}
W=${2:-/tmp/ft4}
STEPS=${3:-600}
BIN=${IM2LATEX_BIN:-.venv/bin/im2latex-jax}
PY=${PYTHON:-.venv/bin/python}
SPLITS=(--split-list "$D/im2latex_train_filter.lst" --split-list "$D/im2latex_validate_filter.lst:0:7475")
mkdir -p "$W"

# 1. Weights: v1, v2 (as of 1df4e83) and the fine-tuned run behind v2.
V1="$W/v1"
[[ -f "$V1/params.msgpack" ]] || bash scripts/get_v1_model.sh "$V1"
if [[ ! -f "$W/v2/params.msgpack" ]]; then
  mkdir -p "$W/v2"
  git archive 1df4e83 im2latex_jax/assets/model | tar -x -C "$W/v2" --strip-components=3
fi
[[ -f "$W/ft1040/params.msgpack" ]] || "$PY" results/finetune_screens3/unblend.py "$W/v2" "$V1" "$W/ft1040"

# 2. Data. finetune_screens3's renders of the real training formulas (same seeds) ...
render() {  # engine seed n dir formulas [extra args]
  [[ -f "$W/$4/im2latex_train_filter.lst" ]] || "$BIN" render-screens --engine "$1" --seed "$2" \
      --n "$3" --workers 2 --formulas "$5" --out "$W/$4" "${@:6}"
}
F="$D/im2latex_formulas.norm.lst"
render pdflatex 3 4000 pdflatex "$F" "${SPLITS[@]}"
render pdflatex 4 6000 pdflatex4 "$F" "${SPLITS[@]}"
render katex 3 3000 katex "$F" "${SPLITS[@]}"
render mathjax 3 3000 mathjax "$F" "${SPLITS[@]}"
render pdflatex 5 5000 pdflatex5 "$F" "${SPLITS[@]}" --fonts times,txfonts,palatino,pxfonts,euler
# ... and new formulas, generated from the training formulas only.
G="$W/gen.lst"
[[ -f "$G" ]] || "$BIN" gen-formulas --formulas "$F" "${SPLITS[@]}" --n 24000 --seed 1 --out "$G"
[[ -f "$W/gen/im2latex_train_filter.lst" ]] || "$BIN" render --formulas "$G" --out "$W/gen" --split train
render pdflatex 6 5000 gen_pdflatex "$G" --fonts times,txfonts,palatino,pxfonts,euler
render katex 6 1500 gen_katex "$G"
render mathjax 6 1500 gen_mathjax "$G"
[[ -d "$W/mixed" ]] || "$BIN" merge-data --out "$W/mixed" --add "$D" \
    $(for s in pdflatex pdflatex4 katex mathjax pdflatex5 gen gen_pdflatex gen_katex gen_mathjax; do
        echo --add "$W/$s:train"; done)

# 3. Train (fresh Adam, 50 warm-up steps, cosine 5e-5 -> 2.5e-6).
"$BIN" train --config configs/screens.py --workdir "$W/run" --config.init_from="$W/ft1040" \
    --config.input.manual_dir="$W/mixed" --config.optim.lr=5e-5 --config.optim.warmup_steps=50 \
    --config.optim.decay=cosine --config.optim.end_lr_factor=0.05 \
    --config.eval_every_steps=200 --config.eval_max_examples=320 \
    --config.num_train_steps="$STEPS" --config.log_every_steps=10
