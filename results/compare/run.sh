#!/usr/bin/env bash
# The recipe comparison of results/README.md: trains every configs/compare.py
# recipe in turn, then decodes the holdout greedily with each one's best
# checkpoint. Rerunning resumes unfinished runs and skips finished ones.
#
#   bash results/compare/run.sh MIXED_DATA_DIR WORKDIR_ROOT [recipe ...]
#
# MIXED_DATA_DIR: the data of configs/shipped.py (`merge-data` of the shared
# data and the generated formulas). Metrics land in WORKDIR_ROOT/<recipe>/ and
# are copied to results/compare/<recipe>.json.
set -euo pipefail
data=${1:?usage: run.sh MIXED_DATA_DIR WORKDIR_ROOT [recipe ...]}
root=${2:?usage: run.sh MIXED_DATA_DIR WORKDIR_ROOT [recipe ...]}
shift 2
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=(im2markup seed transformer shipped shipped+aug seed+aug transformer+aug)
mkdir -p "$root"
here=$(cd "$(dirname "$0")" && pwd)
for r in "${recipes[@]}"; do
  wd="$root/$r"
  if [ ! -f "$wd/final_metrics.json" ]; then
    start=$SECONDS  # a resumed run records only its last segment
    im2latex-jax train --config "$here/../../configs/compare.py:$r" \
      --config.input.manual_dir="$data" --workdir "$wd"
    echo $((SECONDS - start)) > "$wd.train_seconds"
  fi
  im2latex-jax evaluate --workdir "$wd" --split 'validation[7475:]' --beam 1 --step best
  python - "$wd" "$here/$r.json" <<'PY'
import json, os, sys
from im2latex_jax.evaluation import evaluate
wd, out = sys.argv[1:]
res = {"recipe": os.path.basename(wd)}
res["train"] = json.load(open(os.path.join(wd, "final_metrics.json")))
seconds = wd + ".train_seconds"
res["train_seconds"] = float(open(seconds).read()) if os.path.exists(seconds) else None
metrics = os.path.join(evaluate._out_dir(wd, "validation[7475:]", 1), "metrics.json")
res["holdout_greedy"] = json.load(open(metrics))
json.dump(res, open(out, "w"), indent=1, sort_keys=True)
print(out, res["holdout_greedy"])
PY
done
