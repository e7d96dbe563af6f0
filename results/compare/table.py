"""Prints the recipe comparison table (markdown) from results/compare/*.json.

  python results/compare/table.py
"""

import glob
import json
import os

from im2latex_jax import defaults

ORDER = ("im2markup", "seed", "transformer", "shipped", "im2markup+aug", "seed+aug",
         "transformer+aug", "shipped+aug")


def main():
  here = os.path.dirname(os.path.abspath(__file__))
  rows = {}
  for path in glob.glob(os.path.join(here, "*.json")):
    r = json.load(open(path))
    rows[r["recipe"]] = r
  compare = defaults.import_file(os.path.join(here, "..", "..", "configs", "compare.py"))
  print("| recipe (`configs/compare.py:…`) | best step (of) | examples seen | train min "
        "| holdout loss | BLEU-4 | edit acc | exact match |")
  print("|---|---|---|---|---|---|---|---|")
  for name in sorted(rows, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
    r, m = rows[name], rows[name]["holdout_greedy"]
    minutes = f"{r['train_seconds'] / 60:.1f}" if r.get("train_seconds") else "—"
    seen = int(r["train"]["step"]) * compare.get_config(name).input.batch_size
    print(f"| {name} | {int(m['step'])} (of {int(r['train']['step'])}) | {seen:,} | {minutes} "
          f"| {m['loss']:.3f} | {m['bleu4']:.2f} | {100 * m['edit_accuracy']:.2f} "
          f"| {100 * m['exact_match']:.2f} |")


if __name__ == "__main__":
  main()
