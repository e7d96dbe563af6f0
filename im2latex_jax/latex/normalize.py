"""Raw LaTeX -> im2latex-100k's normalized token form (`im2latex-jax normalize`).

Every formula of im2latex-100k went through im2markup's normalizer
(`scripts/preprocessing/preprocess_formulas.py --mode normalize`): a few text
rewrites, KaTeX's parser, and a renderer that writes the parse tree back as
space-separated tokens (`x^2` -> `x ^ { 2 }`, `\\sin` -> `\\operatorname { s i n
}`, `{\\rm d}` -> `\\mathrm { d }`). This module does the same so that formulas
from anywhere (LaTeX sources, a user's papers, CROHME's labels) land in the
model's vocabulary and token form:

  text rewrites (`prepare`, here) -> im2markup's KaTeX 0.6 parser
  (`katex_im2markup/`, vendored) -> tokens (`normalize.js`, ours) ->
  non-ASCII tokens dropped (here).

Agreement with the original script is measured by
`benchmarks/normalizer_agreement.py` (BENCHMARKS.md). The one deliberate
difference: a root's index is written (`\\sqrt [ 3 ] { x }`) where the
original wrote `\\sqrt [ [object Object] ]`.

  im2latex-jax normalize < raw.txt > normalized.txt

reads one formula per line and writes exactly one line per input line: the
normalized formula, or an empty line where it cannot be normalized (then one
line on stderr: `line N: reason`). Exit status: 0 when every non-empty line was
normalized, 1 when some could not be (their lines are empty), 2 for a usage
error or when Node.js is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Iterable, Sequence, TextIO

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'normalize.js')

# im2markup's perl step: `\hskip 3pt` -> `\hspace{ 3pt}` (the first unit ends it).
_HSKIP = re.compile(r'hskip(.*?)(cm|in|pt|mm|em)')
_LABEL = re.compile(r'\\label{.*?}')
_LABEL_TOKENS = re.compile(r'\\label { .*? }')
# Lines with these keep `\\` (rows of an environment); anywhere else a line
# break inside one formula becomes a thin space, as im2markup does.
_KEEPS_ROWS = ('matrix', 'cases', 'array', 'begin')


@dataclasses.dataclass(frozen=True)
class Normalized:
  """One formula's result: `tokens` (space-separated), or '' and an `error`."""
  tokens: str
  error: str | None = None

  @property
  def ok(self) -> bool:
    return self.error is None


def prepare(raw: str) -> str:
  """The text rewrites im2markup applies before parsing, in its order."""
  line = _HSKIP.sub(r'hspace{\1\2}', raw)
  line = line.replace('\r', ' ').strip()
  if line.startswith('%'):
    line = line[1:]
  line = line.split('%')[0]  # (also at `\%`: the dataset was made so)
  line = line.replace('\\~', ' ')
  line = line.replace('\\>', ' ').replace('$', ' ')
  line = _LABEL.sub('', line)
  if not any(word in line for word in _KEEPS_ROWS):
    line = line.replace('\\\\', '\\,')
  line += ' '
  for old in ('{\\rm', '{ \\rm', '\\rm{'):
    line = line.replace(old, '\\mathrm{')
  return line


def _finish(tokens: str) -> str:
  tokens = _LABEL_TOKENS.sub('', tokens, count=1)
  return ' '.join(t for t in tokens.split() if t.isascii())


def node_binary() -> str:
  for name in ('node', 'nodejs'):
    path = shutil.which(name)
    if path:
      return path
  raise RuntimeError('normalizing LaTeX needs Node.js, which is not on PATH: '
                     'install it (`apt-get install nodejs`) and retry')


def normalize_many(formulas: Iterable[str]) -> list[Normalized]:
  """Normalizes each raw formula (one node process for the whole list).

  Returns one `Normalized` per input, in order. A formula that is empty, does
  not parse, or has no token form gets `tokens=''` and the reason in `error`.
  """
  formulas = list(formulas)
  if not formulas:
    return []
  prepared = [prepare(f.replace('\n', ' ')) for f in formulas]
  payload = ''.join(json.dumps(p) + '\n' for p in prepared)
  r = subprocess.run([node_binary(), SCRIPT], input=payload.encode('utf-8'),
                     capture_output=True, check=False)
  lines = r.stdout.decode('utf-8').splitlines()
  if r.returncode != 0 or len(lines) != len(formulas):
    err = r.stderr.decode('utf-8', 'replace').strip().splitlines()
    raise RuntimeError(f'node {os.path.basename(SCRIPT)} failed (exit '
                       f'{r.returncode}, {len(lines)} of {len(formulas)} '
                       f'answers): {err[-1] if err else "no message"}')
  out = []
  for raw, line in zip(formulas, lines):
    answer = json.loads(line)
    if not raw.strip():
      out.append(Normalized('', 'empty formula'))
    elif 'error' in answer:
      out.append(Normalized('', answer['error']))
    else:
      tokens = _finish(answer['tokens'])
      out.append(Normalized(tokens, None if tokens else 'nothing left to write'))
  return out


def normalize(formula: str) -> Normalized:
  """Normalizes one raw formula; see `normalize_many`."""
  return normalize_many([formula])[0]


def run(lines: Sequence[str], out: TextIO, err: TextIO,
        chunk: int = 2000) -> int:
  """Writes one output line per input line; returns how many failed."""
  failed = 0
  for start in range(0, len(lines), chunk):
    part = lines[start:start + chunk]
    for i, (raw, res) in enumerate(zip(part, normalize_many(part))):
      out.write(res.tokens + '\n')
      if not res.ok and raw.strip():
        failed += 1
        err.write(f'line {start + i + 1}: {res.error}\n')
  return failed


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(
      prog=argv[0], description=__doc__.split('\n\n')[0],
      epilog='Exit status: 0 all normalized, 1 some lines could not be '
             '(their output lines are empty), 2 usage error or no Node.js.')
  parser.add_argument('--input', '-i', default='-',
                      help='file of raw formulas, one per line (default stdin)')
  parser.add_argument('--output', '-o', default='-',
                      help='where to write (default stdout)')
  args = parser.parse_args(argv[1:])
  try:
    node_binary()
    if args.input == '-':
      text = sys.stdin.read()
    else:
      with open(args.input, encoding='utf-8', errors='replace') as f:
        text = f.read()
  except (RuntimeError, OSError) as e:
    sys.stderr.write(f'{argv[0]}: {e}\n')
    return 2
  lines = text.split('\n')
  if lines and lines[-1] == '':
    lines.pop()
  if args.output == '-':
    failed = run(lines, sys.stdout, sys.stderr)
  else:
    with open(args.output, 'w', encoding='utf-8') as f:
      failed = run(lines, f, sys.stderr)
  n = sum(1 for line in lines if line.strip())
  sys.stderr.write(f'normalized {n - failed} of {n} formulas'
                   f'{f", {failed} failed (empty lines)" if failed else ""}\n')
  return 1 if failed else 0
