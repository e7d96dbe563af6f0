"""Before/after table of two screenshot-benchmark runs, on their common images.

    python results/robustness/compare.py results/robustness/v1 results/robustness/v2

Each argument is a run's output dir (or a copy of its `predictions/`): the
per-image `predictions/<condition>.tsv` files that `im2latex-jax robustness`
writes (`index, status, prediction, gold`; gzipped copies are read too). Figures are recomputed for both
runs on the formulas both read, so a 100-formula run compares with the first
100 of a 200-formula one. Prints a markdown table: BLEU-4 and refusals
before -> after per condition, then the pooled row.
"""

import gzip
import os
import sys

from im2latex_jax.evaluation import metrics


def _read(run: str) -> dict[str, dict[int, tuple[str, str | None]]]:
  d = os.path.join(run, 'predictions')
  out = {}
  for name in sorted(os.listdir(d)):
    if name.endswith(('.tsv', '.tsv.gz')):
      rows = {}
      opener = gzip.open if name.endswith('.gz') else open
      with opener(os.path.join(d, name), 'rt', encoding='utf-8') as f:
        for line in f:
          idx, status, pred, gold = line.rstrip('\n').split('\t')
          rows[int(idx)] = (gold, pred if status == 'ok' else None)
      out[name.split('.tsv')[0]] = rows
  return out


def _figures(rows, keep):
  refs = [rows[i][0] for i in keep]
  hyps = [rows[i][1] for i in keep]
  bleu = metrics.corpus_bleu(refs, hyps) if refs else 0.0
  refused = sum(h is None for h in hyps)
  return bleu, 100 * refused / max(1, len(hyps)), refs, hyps


def main(argv):
  before, after = _read(argv[1]), _read(argv[2])
  print('| condition | images | BLEU-4 before | BLEU-4 after | refused % before | refused % after |')
  print('|---|---|---|---|---|---|')
  pooled = {'b': ([], []), 'a': ([], [])}
  for cond in after:
    if cond not in before:
      continue
    keep = sorted(set(before[cond]) & set(after[cond]))
    b = _figures(before[cond], keep)
    a = _figures(after[cond], keep)
    for key, fig in (('b', b), ('a', a)):
      pooled[key][0].extend(fig[2])
      pooled[key][1].extend(fig[3])
    print(f'| {cond} | {len(keep)} | {b[0]:.1f} | **{a[0]:.1f}** | {b[1]:.1f} | {a[1]:.1f} |')
  (rb, hb), (ra, ha) = pooled['b'], pooled['a']
  print(f"| **all, pooled** | {len(rb)} | {metrics.corpus_bleu(rb, hb):.1f} | "
        f"**{metrics.corpus_bleu(ra, ha):.1f}** | "
        f"{100 * sum(h is None for h in hb) / max(1, len(hb)):.1f} | "
        f"{100 * sum(h is None for h in ha) / max(1, len(ha)):.1f} |")
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
