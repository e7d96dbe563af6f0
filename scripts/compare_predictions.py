"""Compares two `im2latex-jax evaluate` runs on the same images, token by token.

  python scripts/compare_predictions.py A/predictions.tsv B/predictions.tsv [--top 25]

Prints each run's BLEU-4 / exact match on the images both have, and the
tokens whose corpus count moved most from A to B (`analysis.token_balance`:
shift = predicted count - reference count), e.g. what fine-tuning made a
model stop writing.
"""

import argparse
import sys

from im2latex_jax import analysis
from im2latex_jax.evaluation import evaluate
from im2latex_jax.evaluation import metrics


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("a")
  p.add_argument("b")
  p.add_argument("--top", type=int, default=25)
  args = p.parse_args(argv)
  try:
    a, b = evaluate.read_predictions(args.a), evaluate.read_predictions(args.b)
  except (OSError, ValueError) as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  names = sorted(set(a) & set(b))
  if not names:
    sys.stderr.write("error: the two files share no image names.\n")
    return 2
  golds = [a[n][0] for n in names]
  runs = {"A": [a[n][1] for n in names], "B": [b[n][1] for n in names]}
  print(f"{len(names)} images in both (A {len(a)}, B {len(b)})\n")
  print("| run | BLEU-4 | exact match | tokens written |\n|---|---|---|---|")
  for k, preds in runs.items():
    print(f"| {k} | {metrics.corpus_bleu(golds, preds):.2f} "
          f"| {100 * metrics.exact_match(golds, preds):.1f} "
          f"| {sum(len(x.split()) for x in preds):,} |")
  print(f"\n| token | in references | A - ref | B - ref |\n|---|---|---|---|")
  for r in analysis.token_balance(golds, runs["A"], runs["B"])[:args.top]:
    tok = r["token"].replace("|", "\\|")
    print(f"| `{tok}` | {r['gold']} | {r['shift 0']:+d} | {r['shift 1']:+d} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
