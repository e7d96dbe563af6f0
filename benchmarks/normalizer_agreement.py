"""How often `im2latex-jax normalize` writes what im2markup's own normalizer writes.

The reference is im2markup's `scripts/preprocessing/preprocess_formulas.py
--mode normalize`, run step by step as it is written (its perl hskip rewrite,
`\\r` stripped, `node scripts/preprocessing/preprocess_latex.js normalize`,
non-ASCII tokens dropped; the script itself is Python 2, so its `is_ascii`
is applied here), from a checkout of harvardnlp/im2markup that you give:

  git clone https://github.com/harvardnlp/im2markup /tmp/im2markup
  # its KaTeX fork needs the `match-at` package beside it:
  npm pack match-at && mkdir -p /tmp/im2markup/third_party/match-at && \\
      tar xzf match-at-*.tgz -C /tmp/im2markup/third_party/match-at --strip-components 1
  python benchmarks/normalizer_agreement.py --im2markup /tmp/im2markup \\
      [--raw FILE ...] [--books TARBALL --books-n 20000] [--out report.json]

Raw formulas: the lines of each --raw file (default: im2markup's raw sample
`../shared/data/im2markup_sample/formulas.lst`), and --books-n formulas cut
from LaTeX sources by `harvest`'s finder (math of `$..$`, displays, the books'
macros expanded, multi-line displays in their token form), a seeded sample
of the unique ones. Lines both sides leave empty count as agreeing; the
report lists every disagreement. Without --im2markup, --expected FILE (one
reference line per raw line) is compared instead.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from im2latex_jax.latex import harvest  # pylint: disable=g-import-not-at-top
from im2latex_jax.latex import normalize  # pylint: disable=g-import-not-at-top

SHARED = Path(os.environ.get(
    'IM2LATEX_SHARED', Path(__file__).resolve().parents[2] / 'shared'))


def reference(raw: list[str], im2markup: str) -> list[str]:
  """im2markup's normalizer, step by step as preprocess_formulas.py runs it."""
  lines = [re.sub(r'hskip(.*?)(cm|in|pt|mm|em)', r'hspace{\1\2}', x) for x in raw]
  lines = [x.replace('\r', ' ').strip() for x in lines]
  script = os.path.join('scripts', 'preprocessing', 'preprocess_latex.js')
  r = subprocess.run([normalize.node_binary(), script, 'normalize'],
                     input=''.join(x + '\n' for x in lines).encode('utf-8'),
                     capture_output=True, cwd=im2markup, check=False)
  out = r.stdout.decode('utf-8').split('\n')[:len(raw)]
  if len(out) != len(raw):
    raise RuntimeError(f'the reference answered {len(out)} of {len(raw)} lines '
                       f'(exit {r.returncode})')
  return [' '.join(t for t in x.split() if t.isascii()) for x in out]


def book_formulas(tarball: str, n: int, seed: int = 0) -> list[str]:
  """n unique raw formulas from LaTeX sources, macros expanded."""
  found = set()
  for f, macros in harvest.find_all_math(harvest.read_sources(tarball)):
    try:
      found.add(' '.join(harvest.expand_macros(f.latex, macros).split('\n')))
    except ValueError:
      pass
  found = sorted(x for x in found if x.strip())
  return random.Random(seed).sample(found, min(n, len(found)))


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--im2markup', help='checkout of harvardnlp/im2markup')
  parser.add_argument('--expected', help='reference output, one line per raw line')
  parser.add_argument('--raw', nargs='*', default=[
      str(SHARED / 'data' / 'im2markup_sample' / 'formulas.lst')])
  parser.add_argument('--books', default=str(SHARED / 'data' / 'corpora' /
                                             'tex_sources.tar.gz'))
  parser.add_argument('--books-n', type=int, default=20000)
  parser.add_argument('--out', default=None, help='JSON report')
  args = parser.parse_args(argv[1:])
  if not args.im2markup and not args.expected:
    parser.error('give --im2markup DIR (a checkout) or --expected FILE')

  sets = {}
  for path in args.raw:
    with open(path, encoding='utf-8', errors='replace') as f:
      sets[os.path.basename(path)] = f.read().split('\n')[:-1]
  if args.books_n and os.path.exists(args.books):
    sets['books'] = book_formulas(args.books, args.books_n)
  def git(*a, cwd=None):
    return subprocess.run(['git', *a], capture_output=True, text=True, check=False,
                          cwd=cwd or Path(__file__).resolve().parents[1]).stdout.strip()
  report = {'command': ' '.join(['python', 'benchmarks/normalizer_agreement.py'] + argv[1:]),
            'commit': git('rev-parse', '--short', 'HEAD'),
            'reference': ('im2markup ' + (git('rev-parse', '--short', 'HEAD', cwd=args.im2markup)
                                          or '(checkout, commit unknown)'))
                         if args.im2markup else args.expected,
            'machine': platform.processor() or platform.machine(),
            'sets': {}, 'disagreements': []}
  expected_all = None
  if args.expected:
    with open(args.expected, encoding='utf-8') as f:
      expected_all = f.read().split('\n')
  offset = 0
  for name, raw in sets.items():
    start = time.time()
    ours = [r.tokens for r in normalize.normalize_many(raw)]
    t_ours = time.time() - start
    if expected_all is not None:
      ref = expected_all[offset:offset + len(raw)]
      offset += len(raw)
    else:
      ref = reference(raw, args.im2markup)
    nonempty = [i for i, x in enumerate(raw) if x.strip()]
    same = sum(ours[i] == ref[i] for i in nonempty)
    normalized_by_ref = [i for i in nonempty if ref[i]]
    same_on_ref = sum(ours[i] == ref[i] for i in normalized_by_ref)
    diffs = [i for i in nonempty if ours[i] != ref[i]]
    kinds = collections.Counter(
        'root index (ours writes it, the original [object Object])'
        if '[object' in ref[i] else
        'only the original normalized it' if not ours[i] else
        'only ours normalized it' if not ref[i] else 'different tokens'
        for i in diffs)
    row = {'formulas': len(nonempty), 'identical': same,
           'identical_pct': round(100 * same / max(1, len(nonempty)), 2),
           'normalized_by_original': len(normalized_by_ref),
           'identical_of_those_pct': round(100 * same_on_ref /
                                           max(1, len(normalized_by_ref)), 2),
           'failed_both': sum(not ours[i] and not ref[i] for i in nonempty),
           'disagreements_by_kind': dict(kinds),
           'seconds_ours': round(t_ours, 2)}
    report['sets'][name] = row
    report['disagreements'] += [{'set': name, 'raw': raw[i], 'ours': ours[i],
                                 'original': ref[i]} for i in diffs]
    print(f'{name}: {row["identical"]}/{row["formulas"]} identical '
          f'({row["identical_pct"]} %); of the {row["normalized_by_original"]} '
          f'the original normalizes: {row["identical_of_those_pct"]} %; '
          f'{dict(kinds)}; ours {t_ours:.1f} s')
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=1, ensure_ascii=False)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
