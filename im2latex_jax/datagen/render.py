"""TeX rendering engine: formulas → grayscale images cropped to ink.

im2markup's route (pdflatex, rasterized at 200 dpi, cropped to ink), made fast
by setting many formulas in one document: each formula goes into a box, the
page is resized to that box (`\\pdfpagewidth`/`\\pdfpageheight`, since neither
`preview` nor `standalone` is installed here) and shipped out, so one pdflatex
run and one pdftoppm run serve a whole chunk. Chunks run in parallel worker
processes, each in its own temporary directory, with shell escape off.

Failures are found from the log: every formula is bracketed by `[[B k]]` /
`[[E k:page]]` messages, and a `! ...` error line is charged to the formula
whose bracket it falls in. Errors inside a box stay local to it, so the clean
pages of the chunk are kept; the formulas that erred (or never shipped, after
a fatal error or a timeout) are compiled again without the others until each
one renders cleanly or fails on its own, which catches formulas that were
only collateral damage of a neighbour.

Command line (`im2latex-jax render ...`, see `main`) writes the official
im2latex-100k layout so the TFDS builder reads it as a manual dir.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from im2latex_jax import console
from im2latex_jax.data import layout
from im2latex_jax.data import processing

# Debian packages that provide pdflatex, the AMS packages and pdftoppm.
TEX_PACKAGES = 'texlive-latex-base texlive-latex-recommended poppler-utils'
# Blank margin (pt) around each formula's box on its page: ink may overhang the
# box (italic corrections, big operators); it is cropped away afterwards.
PAGE_MARGIN_PT = 6
# Pages wider/taller than this (pt) are clipped: keeps pdftoppm's raster small
# and the dimension below TeX's \maxdimen.
MAX_PAGE_PT = 4000

_PREAMBLES = {
    # Dataset scale: 10pt rendered at 200 dpi, halved by processing, matches
    # the im2latex-100k images (shared/DESIGN.md).
    'dataset': ('\\documentclass[{size}pt]{{{cls}}}\n'
                '\\usepackage{{amsmath}}\n\\usepackage{{amssymb}}\n'),
    # im2markup scripts/evaluation/render_latex.py: article 12pt, amsmath,
    # displaymath (we set \displaystyle in a box, which is the same math).
    'im2markup_eval': ('\\documentclass[{size}pt]{{{cls}}}\n'
                       '\\usepackage{{amsmath}}\n'),
}

_BODY_HEAD = r"""
\pagestyle{empty}
\newcommand{\mymatrix}[1]{\begin{matrix}#1\end{matrix}}
\newcommand{\mypmatrix}[1]{\begin{pmatrix}#1\end{pmatrix}}
\newcommand{\mycases}[1]{\begin{cases}#1\end{cases}}
\newcount\rnpages
\newdimen\rnmargin \rnmargin=%(margin)dpt
\newdimen\rnmax \rnmax=%(maxpt)dpt
\newdimen\rnw \newdimen\rnh
\def\rnship#1{%%
  \rnw=\wd0 \advance\rnw 2\rnmargin \ifdim\rnw>\rnmax \rnw=\rnmax \fi
  \rnh=\ht0 \advance\rnh\dp0 \advance\rnh 2\rnmargin
  \ifdim\rnh>\rnmax \rnh=\rnmax \fi
  \pdfpagewidth=\rnw \pdfpageheight=\rnh
  \shipout\vbox{\kern\rnmargin\hbox{\kern\rnmargin\box0}}%%
  \global\advance\rnpages 1
  \message{[[E#1:\the\rnpages]]}}
\begin{document}
\pdfhorigin=0pt \pdfvorigin=0pt
\output={\global\setbox0\box255 \deadcycles=0 }
"""

def _tex_env() -> dict[str, str]:
  # Long log lines, so that no marker or error message is wrapped. Read at
  # call time, so a PATH set after import is honoured.
  return dict(os.environ, max_print_line='100000', error_line='254',
              half_error_line='238')

# Math style of each formula: display (`\[...\]`, equation) or inline (`$...$`
# in running text: smaller fractions, limits beside the operator).
STYLES = {'display': '\\displaystyle', 'inline': '\\textstyle'}

# Key in the error dict of an error raised before the first formula.
PREAMBLE = -1

_MARK_RE = re.compile(r'\[\[(B|E)(\d+)(?::(\d+))?\]\]')


@dataclasses.dataclass
class RenderResult:
  """One formula's render.

  Attributes:
    index: position of the formula in the input.
    image: uint8 [H, W] grayscale cropped to ink, ink dark on 255; None on
      failure.
    error: None, or why it failed (TeX's `! ...` error line, 'timeout', ...).
  """
  index: int
  image: np.ndarray | None
  error: str | None = None


def check_tex() -> None:
  """Raises RuntimeError naming the Debian packages if TeX tools are missing."""
  missing = [t for t in ('pdflatex', 'pdftoppm') if shutil.which(t) is None]
  if missing:
    raise RuntimeError(
        f'{", ".join(missing)} not found on PATH; rendering needs TeX Live and '
        f'poppler: `apt-get install {TEX_PACKAGES}`.')


# ----------------------------------------------------------------------------
# Repairs for old syntax and normalization artefacts.
# ----------------------------------------------------------------------------
_UNITS = ('pt', 'pc', 'in', 'bp', 'cm', 'mm', 'dd', 'cc', 'sp', 'em', 'ex',
          'mu', 'fil', 'fill', 'filll')
_UNIT_RE = '|'.join(r'\s*'.join(u) for u in sorted(_UNITS, key=len, reverse=True))
# \kern 1 . 5 p t  ->  \kern1.5pt (primitives taking a bare dimension).
_KERN_RE = re.compile(
    r'(\\(?:kern|mkern|hskip|vskip|mskip|hspace|vspace|moveleft|moveright|'
    r'raise|lower)(?![a-zA-Z])\s*|\\unitlength\s*=?\s*)'
    r'([-+]?\s*(?:[\d.,]\s*)+)(' + _UNIT_RE + r')(?![a-zA-Z])')
# Commands whose leading brace arguments are dimensions (\rule has two).
_DIM_ARGS = {'hspace': 1, 'hspace*': 1, 'vspace': 1, 'vspace*': 1,
             'rule': 2, 'setlength': 2, 'linethickness': 1, 'raisebox': 1,
             'mspace': 1}
_DIM_CMD_RE = re.compile(r'\\(hspace\*?|vspace\*?|rule|raisebox|mspace|'
                         r'setlength|linethickness)'
                         r'(?![a-zA-Z])\s*(\*?)')
_OLD_FORMS = (('pmatrix', 'mypmatrix'), ('matrix', 'mymatrix'),
              ('cases', 'mycases'),
              # \fbox sets text; the data uses it around math.
              ('fbox', 'boxed'))


def _squeeze_dim_args(formula: str) -> str:
  """Removes spaces inside the dimension arguments: `{ 1 . 5 c m }`→`{1.5cm}`."""
  out, pos = [], 0
  for m in _DIM_CMD_RE.finditer(formula):
    if m.start() < pos:
      continue
    name = m.group(1) + m.group(2)
    nargs = _DIM_ARGS.get(name, 1)
    out.append(formula[pos:m.end()])
    j = m.end()
    # \rule takes an optional [raise] first.
    for _ in range(nargs):
      k = j
      while k < len(formula) and formula[k] == ' ':
        k += 1
      if k < len(formula) and formula[k] == '[':
        close = formula.find(']', k)
        if close < 0:
          break
        out.append(formula[j:k] + formula[k:close + 1].replace(' ', ''))
        j = close + 1
        k = j
        while k < len(formula) and formula[k] == ' ':
          k += 1
      if k >= len(formula) or formula[k] != '{':
        break
      depth, end = 0, k
      while end < len(formula):
        depth += {'{': 1, '}': -1}.get(formula[end], 0)
        if depth == 0:
          break
        end += 1
      if depth:
        break
      out.append(formula[j:k] + formula[k:end + 1].replace(' ', ''))
      j = end + 1
    pos = j
  out.append(formula[pos:])
  return ''.join(out)


def repair_formula(formula: str) -> str:
  """Rewrites old or normalized syntax that pdflatex+amsmath rejects.

  - plain-TeX `\\matrix{…}`, `\\pmatrix{…}`, `\\cases{…}` (amsmath forbids
    them) → the amsmath environments through `\\mymatrix` etc.;
  - normalized dimensions split into tokens: `\\hspace { 1 . 5 c m }` →
    `\\hspace{1.5cm}`, `\\kern 2 p t` → `\\kern2pt`;
  - leading `%` (im2markup strips them), newlines and surrounding blanks.
  """
  # One line: the document puts each formula on lines of its own.
  f = ' '.join(formula.split('\n')).strip().strip('%').strip()
  for old, new in _OLD_FORMS:
    f = re.sub(r'\\' + old + r'(?![a-zA-Z*])', lambda _, n=new: '\\' + n, f)
  f = _squeeze_dim_args(f)
  f = _KERN_RE.sub(
      lambda m: m.group(1).rstrip() + re.sub(r'\s+', '', m.group(2) + m.group(3)),
      f)
  return f


# ----------------------------------------------------------------------------
# One chunk: one pdflatex run, one pdftoppm run.
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Options:
  dpi: int
  font_size_pt: int
  font_package: str | None
  template: str
  timeout_s: float
  style: str = 'display'


# Ends a document without a page of its own.
_END = '\\csname @@end\\endcsname\n'


def _pdflatex(workdir: str, source: str, timeout_s: float) -> tuple[str, str | None]:
  """Compiles `source` as `<workdir>/f.tex` (shell escape off, nonstop).

  Returns:
    (the log, '' if there is none; None if pdflatex finished, else what it
    had printed when it was stopped at `timeout_s`: TeX flushes the terminal
    at every \\message, not the log file).
  """
  with open(os.path.join(workdir, 'f.tex'), 'w', encoding='utf-8') as fh:
    fh.write(source)
  cmd = ['pdflatex', '-no-shell-escape', '-interaction=nonstopmode', 'f.tex']
  terminal = None
  try:
    subprocess.run(cmd, cwd=workdir, env=_tex_env(), stdout=subprocess.PIPE,
                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                   timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired as e:
    terminal = (e.stdout or b'').decode('latin-1')
  log_path = os.path.join(workdir, 'f.log')
  log = ''
  if os.path.exists(log_path):
    with open(log_path, encoding='latin-1') as fh:
      log = fh.read()
  return log, terminal


def _document(items: Sequence[tuple[int, str]], opts: _Options) -> str:
  size = opts.font_size_pt
  cls = 'article' if size in (10, 11, 12) else 'extarticle'
  parts = [_PREAMBLES[opts.template].format(size=size, cls=cls)]
  for package in (opts.font_package or '').split(','):
    if package.strip():
      parts.append('\\usepackage{%s}\n' % package.strip())
  parts.append(_BODY_HEAD % {'margin': PAGE_MARGIN_PT, 'maxpt': MAX_PAGE_PT})
  style = STYLES[opts.style]
  for idx, formula in items:
    # The formula sits on its own lines so that a `%` in it cannot comment
    # out the closing `$}`; no macro argument, so an unbalanced brace stays a
    # local error instead of a runaway argument.
    parts.append('\\message{[[B%d]]}\\setbox0=\\hbox{$%s\n%s\n$}'
                 '\\rnship{%d}\n' % (idx, style, formula, idx))
  parts.append(_END)
  return ''.join(parts)


def undefined_commands(names: Sequence[str], *, template: str = 'dataset',
                       font_package: str | None = None,
                       timeout_s: float = 60) -> set[str]:
  """The control words (without backslash) that the template leaves undefined.

  One pdflatex run over the template's preamble (and `_BODY_HEAD`'s own
  macros) asks `\\ifdefined` of every name, so a caller can drop formulas
  that cannot render before rendering them: an undefined command costs a
  whole retry of its chunk in `render_formulas`.
  """
  check_tex()
  names = sorted({n for n in names if re.fullmatch(r'[A-Za-z]+', n)})
  if not names:
    return set()
  opts = _Options(dpi=72, font_size_pt=10, font_package=font_package,
                  template=template, timeout_s=timeout_s)
  doc = _document([], opts)
  assert doc.endswith(_END)
  body = ''.join(f'\\ifdefined\\{n}\\else\\message{{[[U {n}]]}}\\fi\n'
                 for n in names)
  with tempfile.TemporaryDirectory() as d:
    log, terminal = _pdflatex(d, doc[:-len(_END)] + body + _END, timeout_s)
  if terminal is not None:
    raise RuntimeError(f'pdflatex did not finish checking {len(names)} command '
                       f'names in {timeout_s:g} s')
  if '[[U' not in log and not re.search(r'^Output written|^No pages of output', log, re.M):
    raise RuntimeError('pdflatex could not check the command names (no log '
                       'of a finished run)')
  return set(re.findall(r'\[\[U ([A-Za-z]+)\]\]', log))


def _parse_log(log: str) -> tuple[dict[int, int], dict[int, str]]:
  """Returns ({index: page} of clean formulas, {index: error} of erring ones)."""
  pages, errors = {}, {}
  current = PREAMBLE  # An error before the first formula: the preamble's.
  for line in log.splitlines():
    if line.startswith('! ') and current is not None and current not in errors:
      errors[current] = line[2:].strip()
    for m in _MARK_RE.finditer(line):
      kind, idx = m.group(1), int(m.group(2))
      if kind == 'B':
        current = idx
      else:
        if idx not in errors:
          pages[idx] = int(m.group(3))
        current = None
  return pages, errors


def _read_pgm(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert('L'), dtype=np.uint8)


def _compile(items: Sequence[tuple[int, str]], opts: _Options, workdir: str
             ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
  """Compiles items once; returns (clean images, errors); unaccounted missing."""
  for name in os.listdir(workdir):
    os.remove(os.path.join(workdir, name))
  log, terminal = _pdflatex(workdir, _document(items, opts), opts.timeout_s)
  pages, errors = _parse_log(log)
  images: dict[int, np.ndarray] = {}
  pdf = os.path.join(workdir, 'f.pdf')
  if terminal is not None:  # timed out
    # The log (flushed per \message) shows which formula was running.
    last_b = [int(m.group(2)) for m in _MARK_RE.finditer(terminal + log)
              if m.group(1) == 'B']
    if last_b and last_b[-1] not in pages:
      errors[last_b[-1]] = f'timeout after {opts.timeout_s:g} s'
    return {}, errors  # The PDF is unfinished: recompile the clean ones.
  if pages and os.path.exists(pdf):
    try:
      subprocess.run(['pdftoppm', '-r', str(opts.dpi), '-gray', pdf,
                      os.path.join(workdir, 'p')], check=False,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     timeout=opts.timeout_s)
    except subprocess.TimeoutExpired:
      pass  # Pages not written count as missing and are compiled again.
    names = {}
    for name in os.listdir(workdir):
      m = re.fullmatch(r'p-0*(\d+)\.pgm', name)
      if m:
        names[int(m.group(1))] = os.path.join(workdir, name)
    for idx, page in pages.items():
      if page in names:
        images[idx] = processing.crop_to_ink(_read_pgm(names[page]),
                                             default_size=None)
  return images, errors


def _render_chunk(items: Sequence[tuple[int, str]], opts: _Options
                  ) -> list[RenderResult]:
  """Renders a chunk; failing formulas are isolated and dropped."""
  results: dict[int, RenderResult] = {}
  with tempfile.TemporaryDirectory(prefix='im2latex_render_') as workdir:
    pending = list(items)
    while pending:
      images, errors = _compile(pending, opts, workdir)
      bad = []
      for idx, formula in pending:
        if idx not in images:
          bad.append((idx, formula))
        elif (images[idx] == 255).all():
          results[idx] = RenderResult(idx, None, 'empty render (no ink)')
        else:
          results[idx] = RenderResult(idx, images[idx])
      if not bad:
        break
      if PREAMBLE in errors:
        # A broken preamble (e.g. an unknown font package) fails everything.
        for idx, _ in bad:
          results[idx] = RenderResult(idx, None,
                                      'preamble: ' + errors[PREAMBLE])
        break
      # Everything before the first erring formula compiled clean, so that
      # one fails on its own; the later bad ones may only be collateral
      # damage (or lost to a fatal error), so they are compiled again
      # without it.
      culprit = next((it for it in bad if it[0] in errors), bad[0])
      results[culprit[0]] = RenderResult(
          culprit[0], None,
          errors.get(culprit[0], 'no page produced (fatal TeX error)'))
      pending = [it for it in bad if it is not culprit]
  return [results[idx] for idx, _ in items]


def _render_chunk_entry(args) -> list[RenderResult]:
  items, opts = args
  try:
    return _render_chunk(items, opts)
  except Exception as e:  # pylint: disable=broad-except
    # One broken chunk (disk full, a killed process) must not end the run.
    return [RenderResult(idx, None, f'render error: {e!r}') for idx, _ in items]


def render_formulas(formulas: Sequence[str], *, dpi: int = 200,
                    font_size_pt: int = 10, font_package: str | None = None,
                    template: str = 'dataset', workers: int = 2,
                    chunk_size: int = 200, timeout_s: float = 60,
                    style: str = 'display',
                    progress: Callable[[int], None] | None = None
                    ) -> list[RenderResult]:
  """Renders formulas with pdflatex, one page per formula, cropped to ink.

  Args:
    formulas: LaTeX math (tokenized or not), without `$` delimiters.
    dpi: rasterization resolution.
    font_size_pt: document class size option (10, 11, 12; others through
      extarticle).
    font_package: optional packages loaded after the template, comma
      separated (e.g. 'mathptmx', 'txfonts').
    template: 'dataset' (article, amsmath, amssymb) or 'im2markup_eval'
      (im2markup's evaluation template: article, amsmath; im2markup used it
      at font_size_pt=12).
    workers: parallel worker processes (one pdflatex each).
    chunk_size: formulas per TeX document.
    timeout_s: limit per pdflatex / pdftoppm run.
    style: 'display' or 'inline' (see STYLES).
    progress: called with the number of formulas done after each chunk.

  Returns:
    One RenderResult per formula, in input order.
  """
  check_tex()
  if template not in _PREAMBLES:
    raise ValueError(f'template={template!r}; use one of {sorted(_PREAMBLES)}.')
  if style not in STYLES:
    raise ValueError(f'style={style!r}; use one of {sorted(STYLES)}.')
  opts = _Options(dpi=dpi, font_size_pt=font_size_pt,
                  font_package=font_package, template=template,
                  timeout_s=timeout_s, style=style)
  items = [(i, repair_formula(f or '')) for i, f in enumerate(formulas)]
  chunk_size = max(1, min(chunk_size, -(-len(items) // max(1, workers))))
  chunks = [(items[i:i + chunk_size], opts)
            for i in range(0, len(items), chunk_size)]
  out: list[RenderResult] = []

  def collect(results):
    for rs in results:
      out.extend(rs)
      if progress is not None:
        progress(len(out))

  if workers <= 1 or len(chunks) <= 1:
    collect(_render_chunk_entry(c) for c in chunks)
  else:
    # Threads, not processes: the work is in pdflatex/pdftoppm subprocesses,
    # and forking a process that runs JAX can deadlock.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      collect(pool.map(_render_chunk_entry, chunks))
  return sorted(out, key=lambda r: r.index)


# ----------------------------------------------------------------------------
# Command line: formulas file → official im2latex-100k layout.
# ----------------------------------------------------------------------------
def _parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='im2latex-jax render',
      description='Render formulas (one per line) with pdflatex into the '
      'im2latex-100k layout: im2latex_formulas.norm.lst, '
      'im2latex_<split>_filter.lst, formula_images_processed/*.png.')
  parser.add_argument('--formulas', required=True,
                      help='text file, one formula per line')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--split', default='train',
                      help='train, validation or test (written as data/layout.py names its list)')
  parser.add_argument('--font-package', default=None,
                      help='LaTeX package loaded after the template, e.g. '
                      'lmodern, mathptmx')
  parser.add_argument('--font-size', type=int, default=10,
                      help='document font size in pt (10 matches the data)')
  parser.add_argument('--dpi', type=int, default=200)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--chunk-size', type=int, default=200)
  parser.add_argument('--timeout', type=float, default=60,
                      help='seconds per pdflatex run')
  parser.add_argument('--limit', type=int, default=None,
                      help='render only the first N formulas')
  return parser.parse_args(argv)


def main(argv: list[str]) -> int:
  """`im2latex-jax render --formulas FILE --out DIR ...`; returns exit status.

  Failures are listed on stderr and in DIR/render_failures.tsv
  (`index<TAB>error<TAB>formula`); they never stop the run.
  """
  args = _parse_args(list(argv)[1:])
  try:
    layout.split_file(args.split)
  except ValueError as e:
    print(f'error: --split: {e}', file=sys.stderr)
    return 2
  with open(args.formulas, encoding='utf-8') as fh:
    formulas = fh.read().split('\n')
  if formulas and formulas[-1] == '':
    formulas.pop()
  if args.limit is not None:
    formulas = formulas[:args.limit]

  start = time.time()
  results = render_formulas(
      formulas, dpi=args.dpi, font_size_pt=args.font_size,
      font_package=args.font_package, workers=args.workers,
      chunk_size=args.chunk_size, timeout_s=args.timeout,
      progress=console.Progress(len(formulas), 'formulas', 'rendered').update)
  ok = [r for r in results if r.image is not None]
  failures = [(r.index, r.error) for r in results if r.image is None]
  # im2markup's processing (pad, bucket, x2 downsample) in parallel threads
  # (PIL releases the GIL).
  with concurrent.futures.ThreadPoolExecutor(max(1, args.workers)) as pool:
    processed = list(pool.map(lambda r: processing.process_im2markup(r.image), ok))
  layout.write_dataset(
      args.out, formulas, args.split,
      ((r.index, f'{args.split}_{r.index:06d}.png', im)
       for r, im in zip(ok, processed)), failures=failures)
  for idx, error in failures:
    print(f'render failed: formula {idx}: {error}', file=sys.stderr)
  elapsed = time.time() - start
  print(f'rendered {len(ok)}/{len(formulas)} formulas in {elapsed:.1f} s '
        f'({len(formulas) / max(elapsed, 1e-9):.1f}/s), {len(failures)} '
        f'failures → {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
