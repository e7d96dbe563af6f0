#!/usr/bin/env bash
# Fine-tune 5 of issue "Read real screenshots (3/3)": v1's decoder frozen.
#
# Fine-tuning the whole network on the mix (finetune_screens2-4) reads other
# fonts well but loses ~1.5 BLEU-4 on the clean holdout, in omissions. v1
# already saw the real formulas of the mix ~19 times; this run trains only the
# encoder (CNN + row BiLSTM: what sees the glyphs) on finetune_screens3's data
# and leaves v1's decoder (its language model) as it was
# (config.optim.frozen=cell,key_proj).
#
#   bash results/finetune_screens5/run.sh [DATA=../shared/data/im2latex100k] [WORK=/tmp/ft5] [STEPS=1000]
#
# Seeded; a rerun skips what exists and `train` resumes from its last
# checkpoint. The data is finetune_screens3's (its run.sh steps 1-2, same
# seeds; that script's WORK dir is reused when it exists).
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-../shared/data/im2latex100k}
W=${2:-/tmp/ft5}
STEPS=${3:-1000}
DATA=${FT3_WORK:-/tmp/ft3}
BIN=${IM2LATEX_BIN:-.venv/bin/im2latex-jax}
mkdir -p "$W"

# 1. v1 and the data, as in finetune_screens3 (STEPS=0: that script's steps 1-2).
V1="$DATA/v1"
[[ -d "$DATA/mixed" && -f "$V1/params.msgpack" ]] || bash results/finetune_screens3/run.sh "$D" "$DATA" 0

# 2. Train the encoder only (fresh Adam, 50 warm-up steps, cosine 1e-4 -> 5e-6).
"$BIN" train --config configs/screens.py --workdir "$W/run" --config.init_from="$V1" \
    --config.optim.frozen=cell,key_proj \
    --config.input.manual_dir="$DATA/mixed" --config.optim.lr=1e-4 --config.optim.warmup_steps=50 \
    --config.optim.decay=cosine --config.optim.end_lr_factor=0.05 \
    --config.eval_every_steps=200 --config.eval_max_examples=320 \
    --config.num_train_steps="$STEPS" --config.log_every_steps=10

# 3. The last step, on the clean holdout (greedy) and on the conditions v1
#    reads worst (the same images as results/finetune_screens2/hard).
HARD=clean,katex-13px-inline,pdf-times-10pt-150dpi,pdf-txfonts-12pt-110dpi,pdf-palatino-11pt-120dpi,pdf-pxfonts-10pt-144dpi,pdf-euler-10pt-150dpi
[[ -f "$W/m/a1.0/params.msgpack" ]] || "$BIN" export-model --workdir "$W/run" --step latest --out "$W/m/a1.0"
"$BIN" evaluate --workdir "$W/m/a1.0" --split 'validation[7475:]' --manual-dir "$D" --beam 1
[[ -f "$W/hard/a1.0/table.md" ]] || "$BIN" robustness --data "$D" --n 50 --conditions "$HARD" \
    --workdir "$W/m/a1.0" --out "$W/hard/a1.0"
