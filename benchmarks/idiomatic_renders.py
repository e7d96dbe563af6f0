"""Does the idiomatic LaTeX render to the same image as the token form?

For every formula of the bundled data (default: the 11,475 of
`../shared/data/im2latex100k/im2latex_formulas.norm.lst`), renders the token
form and `latex.idiomatic.to_idiomatic` of it with the project's pdflatex
renderer (dataset template, display style, 200 dpi, cropped to ink) and
compares the two images pixel for pixel (`latex.render_check`).

  python benchmarks/idiomatic_renders.py [--formulas F] [--limit N] \\
      [--workers 2] [--out results/latex/idiomatic_renders.json]

Prints and writes: how many formulas render from their tokens, of those how
many render identically from the idiomatic form (the goal: >= 99.5 %), the
differences by design (`\\liminf`'s thin space: idiomatic.SPACED_OPERATORS;
words of text-mode commands joined: idiomatic.TEXT_MODE), and
every other difference with both spellings.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from im2latex_jax.data import layout  # pylint: disable=g-import-not-at-top
from im2latex_jax.latex import idiomatic  # pylint: disable=g-import-not-at-top
from im2latex_jax.latex import render_check  # pylint: disable=g-import-not-at-top

SHARED = Path(os.environ.get(
    'IM2LATEX_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
FORMULAS = SHARED / 'data' / 'im2latex100k' / layout.FORMULAS_FILE


def by_design(tokens: str) -> str | None:
  """Why the idiomatic render may differ from the tokens' on purpose."""
  spelled = {' '.join(name) for name in idiomatic.SPACED_OPERATORS}
  if any(f'\\operatorname* {{ {s} }}' in tokens for s in spelled):
    return 'liminf/limsup: the command sets its thin space'
  words = tokens.split()
  if any(t in idiomatic.TEXT_MODE for t in words):
    return 'text-mode command: its word joined, not spaced letter by letter'
  return None


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--formulas', default=str(FORMULAS))
  parser.add_argument('--limit', type=int, default=None)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--out', default=None, help='JSON report')
  args = parser.parse_args(argv[1:])
  formulas = layout.read_formulas(args.formulas)[:args.limit]
  start = time.time()
  ideal = [idiomatic.to_idiomatic(f) for f in formulas]
  t_write = time.time() - start
  verdicts = render_check.compare_renders(formulas, ideal, workers=args.workers)
  seconds = time.time() - start
  counts = collections.Counter(verdicts)
  rendering = [i for i, v in enumerate(verdicts)
               if v not in (render_check.FIRST_FAILS, render_check.BOTH_FAIL)]
  identical = counts[render_check.IDENTICAL]
  designed = [i for i in rendering if verdicts[i] == render_check.DIFFERS
              and by_design(formulas[i])]
  other = [i for i in rendering if verdicts[i] != render_check.IDENTICAL
           and i not in set(designed)]
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                          capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[1]).stdout.strip()
  report = {
      'formulas': len(formulas),
      'tokens_render': len(rendering),
      'identical': identical,
      'identical_pct_of_rendering': round(100 * identical / max(1, len(rendering)), 3),
      'differ_by_design': len(designed),
      'differ_otherwise': len(other),
      'verdicts': dict(counts),
      'chars_tokens': sum(map(len, formulas)),
      'chars_idiomatic': sum(map(len, ideal)),
      'seconds': round(seconds, 1), 'seconds_writing_idiomatic': round(t_write, 2),
      'command': ' '.join(['python', 'benchmarks/idiomatic_renders.py'] + argv[1:]),
      'commit': commit, 'machine': platform.processor() or platform.machine(),
      'identical_or_by_design_pct': round(100 * (identical + len(designed)) /
                                          max(1, len(rendering)), 3),
      'by_design_reasons': dict(collections.Counter(by_design(formulas[i])
                                                    for i in designed)),
      'by_design': [{'tokens': formulas[i], 'idiomatic': ideal[i],
                     'why': by_design(formulas[i])} for i in designed],
      'differences': [{'tokens': formulas[i], 'idiomatic': ideal[i],
                       'verdict': verdicts[i]} for i in other],
      'tokens_do_not_render_idiomatic_does': sum(
          v == render_check.FIRST_FAILS for v in verdicts),
  }
  print(f'{len(formulas)} formulas, {len(rendering)} render from their tokens; '
        f'identical from the idiomatic form: {identical} '
        f'({report["identical_pct_of_rendering"]} %); differing by design '
        f'{len(designed)} {report["by_design_reasons"]}; other differences: '
        f'{len(other)}; {seconds:.0f} s')
  for i in other:
    print(f'  {verdicts[i]}: {formulas[i]}\n    -> {ideal[i]}')
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=1, ensure_ascii=False)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
