"""LaTeX sources -> formulas in the official layout (`im2latex-jax harvest`).

  im2latex-jax harvest --src papers.tar.gz --out DIR [--validation-fraction 0.05]
                       [--min-tokens 1] [--max-tokens 150] [--no-render]

Reads every .tex file of a folder or a tarball (an arXiv source bundle, a
book's repository) and writes DIR in im2latex-100k's layout, so `merge-data`,
the TFDS builder and training read it unchanged:

  im2latex_formulas.norm.lst, im2latex_{train,validate}_filter.lst
                                   (validation: a hash-chosen 5 % by default)
  formula_images_processed/*.png   (pdflatex renders of the kept formulas)
  harvest_report.json              found / kept / dropped by reason
  README.md, licenses/             where the formulas came from, their licences

What is a formula: the math of `$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]` and
of the display environments (equation, align, gather, multline, eqnarray,
flalign, alignat, displaymath, math; starred forms too). Before normalizing,
each document's own simple macros are expanded: `\\newcommand`,
`\\renewcommand`, `\\providecommand` (with arguments and an optional first
argument's default), `\\def` with undelimited `#1..#9` parameters, and
`\\DeclareMathOperator` (as `\\operatorname{..}`; the starred form as
`\\mathop{\\mathrm{..}}`, which the dataset's parser reads). Macros are collected per top-level folder of the
source (one book, one paper), from its .tex/.sty/.cls files in path order, a
later definition replacing an earlier one as LaTeX's \\renewcommand does.

Operators written `\\mathop{\\mathrm{..}}\\nolimits` become `\\operatorname{..}`
(the same thing, which the dataset's parser reads; `operator_forms`).

Multi-line displays keep their lines, in one token form (docs/LATEX.md):
  align, eqnarray, flalign, alignat, split, aligned ->
      `\\begin{aligned} { a } & { { } = b } \\\\ ... \\end{aligned}`
  gather, multline, gathered ->
      `\\begin{array} { c } { a = b } \\\\ ... \\end{array}`
(the normalizer's own forms for `aligned` and a one-column array). A display
of one line drops its alignment points and is a one-line formula.

Then each formula is normalized (`latex.normalize`), deduplicated on its
tokens, kept within the token-length limits, dropped if it uses a command
LaTeX does not define (one pdflatex run asks for all names), and kept only if
pdflatex renders its token form (the image shows exactly the gold).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import sys
import tarfile
import time
import zlib
from typing import Iterator

from im2latex_jax import console
from im2latex_jax.latex import normalize as normalize_lib

SOURCE_EXTS = ('.tex',)
MACRO_EXTS = ('.tex', '.sty', '.cls', '.def')
LICENSE_NAMES = re.compile(r'^(licen[cs]e|copying|copyright)(\.[a-z]+)?$', re.I)
# A source without a licence file often states it in its README.
README_NAMES = re.compile(r'^readme(\.[a-z]+)?$', re.I)

ALIGN_ENVS = ('align', 'eqnarray', 'flalign', 'alignat', 'split', 'aligned',
              'alignedat', 'xalignat')
GATHER_ENVS = ('gather', 'multline', 'gathered')
DISPLAY_ENVS = ('equation', 'displaymath', 'math', 'align', 'eqnarray',
                'flalign', 'alignat', 'xalignat', 'gather', 'multline')
# Environments whose content is not LaTeX to scan.
VERBATIM_ENVS = ('verbatim', 'Verbatim', 'lstlisting', 'comment', 'minted')

MAX_EXPANSIONS = 200  # per formula: stops recursive macros
MAX_FORMULA_CHARS = 20000


@dataclasses.dataclass(frozen=True)
class Macro:
  nargs: int
  body: str
  default: str | None = None  # the optional first argument's default


@dataclasses.dataclass(frozen=True)
class Found:
  """One formula as found: its source, where, and whether it was display."""
  latex: str
  source: str
  display: bool


# ----------------------------------------------------------------------------
# Reading sources.
# ----------------------------------------------------------------------------
def read_sources(src: str) -> dict[str, str]:
  """{relative path: text} of the LaTeX files in a folder or tarball."""
  files = {}
  if os.path.isdir(src):
    for root, _, names in os.walk(src):
      for name in names:
        if (name.endswith(MACRO_EXTS) or LICENSE_NAMES.match(name) or
            README_NAMES.match(name)):
          path = os.path.join(root, name)
          with open(path, encoding='utf-8', errors='replace') as f:
            files[os.path.relpath(path, src)] = f.read()
  elif os.path.isfile(src) and tarfile.is_tarfile(src):
    with tarfile.open(src) as tar:
      for member in tar:
        name = os.path.basename(member.name)
        if member.isfile() and (name.endswith(MACRO_EXTS) or
                                LICENSE_NAMES.match(name) or
                                README_NAMES.match(name)):
          data = tar.extractfile(member).read()
          files[os.path.normpath(member.name)] = data.decode('utf-8', 'replace')
  elif os.path.isfile(src) and src.endswith(SOURCE_EXTS):
    with open(src, encoding='utf-8', errors='replace') as f:
      files[os.path.basename(src)] = f.read()
  else:
    raise ValueError(f'--src {src!r} is not a folder, a tarball or a .tex file')
  return dict(sorted(files.items()))


def group_of(path: str) -> str:
  """The top-level folder a file belongs to ('' for files at the top)."""
  parts = path.split(os.sep)
  return parts[0] if len(parts) > 1 else ''


def strip_comments(text: str) -> str:
  """Drops `%` comments (not `\\%`) to the end of their line."""
  return re.sub(r'(?<!\\)((?:\\\\)*)%[^\n]*', r'\1', text)


# ----------------------------------------------------------------------------
# Balanced groups.
# ----------------------------------------------------------------------------
def _skip_space(s: str, i: int) -> int:
  while i < len(s) and s[i] in ' \t\n':
    i += 1
  return i


def read_group(s: str, i: int, open_: str = '{', close: str = '}'
               ) -> tuple[str, int] | None:
  """(content, index after) of the balanced group opening at s[i], or None."""
  if i >= len(s) or s[i] != open_:
    return None
  depth, j = 0, i
  while j < len(s):
    c = s[j]
    if c == '\\':
      j += 2
      continue
    if c == open_:
      depth += 1
    elif c == close:
      depth -= 1
      if depth == 0:
        return s[i + 1:j], j + 1
    j += 1
  return None


def read_argument(s: str, i: int) -> tuple[str, int] | None:
  """A macro argument at s[i] (after spaces): a braced group or one token."""
  i = _skip_space(s, i)
  if i >= len(s):
    return None
  if s[i] == '{':
    return read_group(s, i)
  if s[i] == '\\':
    m = re.match(r'\\(?:[A-Za-z@]+|.)', s[i:])
    return m.group(0), i + len(m.group(0))
  if s[i] in '}':
    return None
  return s[i], i + 1


# ----------------------------------------------------------------------------
# Macros.
# ----------------------------------------------------------------------------
_NEWCOMMAND = re.compile(r'\\(newcommand|renewcommand|providecommand)\*?\s*')
_DEF = re.compile(r'\\[gex]?def\s*\\([A-Za-z@]+)((?:#\d)*)\s*(?=\{)')
_OPERATOR = re.compile(r'\\DeclareMathOperator(\*?)\s*')


def collect_macros(text: str, macros: dict[str, Macro]) -> None:
  """Adds the macro definitions of `text` (comments stripped) to `macros`."""
  for m in _NEWCOMMAND.finditer(text):
    i = m.end()
    if i < len(text) and text[i] == '{':
      got = read_group(text, i)
      if got is None:
        continue
      name, i = got[0].strip(), got[1]
    else:
      nm = re.match(r'\\[A-Za-z@]+', text[i:])
      if not nm:
        continue
      name, i = nm.group(0), i + nm.end()
    if not re.fullmatch(r'\\[A-Za-z@]+', name):
      continue
    nargs, default = 0, None
    i = _skip_space(text, i)
    opt = read_group(text, i, '[', ']')
    if opt is not None:
      if not opt[0].strip().isdigit():
        continue
      nargs, i = int(opt[0]), opt[1]
      i = _skip_space(text, i)
      opt = read_group(text, i, '[', ']')
      if opt is not None:
        default, i = opt
    body = read_group(text, _skip_space(text, i))
    if body is None:
      continue
    if m.group(1) == 'providecommand' and name[1:] in macros:
      continue
    macros[name[1:]] = Macro(nargs, body[0], default)
  for m in _DEF.finditer(text):
    body = read_group(text, m.end())
    params = m.group(2)
    if body is None or params != ''.join(f'#{k}' for k in range(1, len(params) // 2 + 1)):
      continue
    macros[m.group(1)] = Macro(len(params) // 2, body[0])
  for m in _OPERATOR.finditer(text):
    name = read_group(text, m.end())
    if name is None:
      continue
    op = read_group(text, _skip_space(text, name[1]))
    if op is None or not re.fullmatch(r'\s*\\[A-Za-z@]+\s*', name[0]):
      continue
    # The dataset's parser reads `\\operatorname*` as `\\operatorname` of `*`;
    # `\\mathop{\\mathrm{..}}` sets the same limits above/below.
    body = (f'\\mathop{{\\mathrm{{{op[0]}}}}}' if m.group(1)
            else f'\\operatorname{{{op[0]}}}')
    macros[name[0].strip()[1:]] = Macro(0, body)


_CONTROL_WORD = re.compile(r'\\([A-Za-z]+)')


def expand_macros(formula: str, macros: dict[str, Macro]) -> str:
  """Expands the macros of `macros` in `formula`, outermost first.

  Raises:
    ValueError: a macro lacks its arguments, or expansion does not end.
  """
  if not macros:
    return formula
  s, pos, count = formula, 0, 0
  while True:
    m = _CONTROL_WORD.search(s, pos)
    if m is None:
      return s
    macro = macros.get(m.group(1))
    if macro is None:
      pos = m.end()
      continue
    count += 1
    if count > MAX_EXPANSIONS or len(s) > MAX_FORMULA_CHARS:
      raise ValueError(f'macro \\{m.group(1)} expands without end')
    i, args = m.end(), []
    if macro.default is not None:
      j = _skip_space(s, i)
      opt = read_group(s, j, '[', ']')
      if opt is not None:
        args.append(opt[0])
        i = opt[1]
      else:
        args.append(macro.default)
    while len(args) < macro.nargs:
      got = read_argument(s, i)
      if got is None:
        raise ValueError(f'macro \\{m.group(1)} lacks an argument')
      args.append(got[0])
      i = got[1]
    body = re.sub(r'#(\d)', lambda k: args[int(k.group(1)) - 1]
                  if 0 < int(k.group(1)) <= len(args) else k.group(0),
                  macro.body)
    # A control word followed by a letter needs a space to stay one word.
    if re.match(r'[A-Za-z]', s[i:i + 1]) and re.search(r'\\[A-Za-z]+$', body):
      body += ' '
    s = s[:m.start()] + body + s[i:]
    pos = m.start()  # the expansion may hold more macros


# ----------------------------------------------------------------------------
# Finding math.
# ----------------------------------------------------------------------------
_ENV_ALT = '|'.join(DISPLAY_ENVS)
_OPENERS = re.compile(
    r'(?<!\\)(\$\$|\$|\\\(|\\\[|\\begin\{(' + _ENV_ALT + r')(\*?)\}|'
    r'\\begin\{(' + '|'.join(VERBATIM_ENVS) + r')\*?\}|\\verb\*?(.))')


def find_math(text: str, source: str = '') -> Iterator[Found]:
  """Yields the math of `text` (comments already stripped), in order."""
  pos = 0
  while True:
    m = _OPENERS.search(text, pos)
    if m is None:
      return
    token = m.group(1)
    if m.group(5) is not None:  # \verb|...|
      end = text.find(m.group(5), m.end())
      pos = len(text) if end < 0 else end + 1
      continue
    if m.group(4) is not None:  # a verbatim environment: skip its content
      end = text.find('\\end{' + m.group(4), m.end())
      pos = len(text) if end < 0 else end
      continue
    if m.group(2) is not None:
      env = m.group(2) + m.group(3)
      close = '\\end{' + env + '}'
      end = text.find(close, m.end())
      if end < 0:
        pos = m.end()
        continue
      body = text[m.end():end]
      yield Found(display_body(m.group(2), body), source, True)
      pos = end + len(close)
      continue
    close = {'$$': '$$', '$': '$', '\\(': '\\)', '\\[': '\\]'}[token]
    end = m.end()
    while True:
      end = text.find(close, end)
      if end < 0 or text[end - 1] != '\\' or text[end - 2:end] == '\\\\':
        break
      end += 1
    if end < 0:
      pos = m.end()
      continue
    body = text[m.end():end]
    if token == '$' and '\n\n' in body:  # a stray dollar, not math
      pos = m.end()
      continue
    yield Found(display_body('equation', body), source, token != '$' and token != '\\(')
    pos = end + len(close)


_DROP = re.compile(r'\\(?:nonumber|notag|displaybreak(?:\[\d\])?|allowdisplaybreaks|'
                   r'noindent|centering)(?![A-Za-z])')
_TAG_LABEL = re.compile(r'\\(?:label|tag\*?|eqref|hypertarget)\s*\{[^{}]*\}')
_ROW_BREAK = re.compile(r'\\\\(?:\s*\[[^\]]*\])?')


def _inner_envs(body: str) -> str:
  """Inner split/aligned/gathered/multline blocks in their token forms."""
  for env in ALIGN_ENVS + GATHER_ENVS:
    pattern = re.compile(r'\\begin\{' + env + r'\*?\}(\{\d+\})?(.*?)\\end\{' + env + r'\*?\}',
                         re.S)
    body = pattern.sub(lambda m, e=env: _as_block(e, m.group(2)), body)
  return body


def _as_block(env: str, body: str) -> str:
  rows = [r.strip() for r in _ROW_BREAK.split(body)]
  while rows and not rows[-1]:
    rows.pop()
  if len(rows) <= 1:
    return ' '.join(r.replace('&', ' ') for r in rows)
  joined = ' \\\\ '.join(rows)
  if env in GATHER_ENVS:
    return '\\begin{array}{c} ' + joined.replace('&', ' ') + ' \\end{array}'
  return '\\begin{aligned} ' + joined + ' \\end{aligned}'


_MATHOP_NOLIMITS = re.compile(
    r'\\mathop\s*\{\s*\\(?:mathrm|rm|operatorname)\s*\{([A-Za-z \-]+)\}\s*\}\s*\\nolimits')
_MATHOP_LIMITS = re.compile(r'(\\mathop\s*\{(?:[^{}]|\{[^{}]*\})*\})\s*\\limits')
_XSPACE = re.compile(r'\\xspace(?![A-Za-z])')


def operator_forms(latex: str) -> str:
  """Operator spellings the dataset's parser rejects, in ones it reads.

  `\\mathop{\\mathrm{colim}}\\nolimits` (how the Stacks Project writes its
  operators) is `\\operatorname{colim}`; `\\mathop{..}\\limits` is `\\mathop{..}`
  in display; `\\xspace` (a text-mode spacing macro) is nothing in math.
  The parser refuses `\\limits`/`\\nolimits` after a `\\mathop` group.
  """
  latex = _MATHOP_NOLIMITS.sub(r'\\operatorname{\1}', latex)
  latex = _MATHOP_LIMITS.sub(r'\1', latex)
  return _XSPACE.sub('', latex)


def display_body(env: str, body: str) -> str:
  """The math of one display, multi-line environments in their token form."""
  body = _DROP.sub(' ', body)
  body = _TAG_LABEL.sub(' ', body)
  if env == 'alignat' or env == 'xalignat':
    body = re.sub(r'^\s*\{\d+\}', '', body)
  body = _inner_envs(body)
  if env in ALIGN_ENVS or env in GATHER_ENVS:
    body = _as_block(env, body)
  return ' '.join(body.split())


# ----------------------------------------------------------------------------
# The whole harvest.
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class Harvest:
  formulas: list[str]              # kept, normalized, unique
  displays: list[bool]
  found: int
  dropped: collections.Counter     # reason -> count
  sources: list[str]               # the top-level folder of each formula
  failures: list[tuple[str, str]]  # (reason, formula) samples
  undefined: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)  # undefined command -> formulas


def _reason(error: str) -> str:
  """An error message without the parts that vary per formula."""
  error = error.replace('KaTeX parse error: ', '').split(' at position')[0]
  error = re.sub(r'^macro \\\S+', 'macro', error)
  # Quoted input longer than a delimiter varies per formula: `Undefined
  # control sequence: '\\foo'` -> `'…'`; `Expected '}', got 'EOF'` stays.
  return re.sub(r"'([^']*)'", lambda m: m.group(0) if len(m.group(1)) <= 3
                else "'…'", error)[:70]


def is_multiline(tokens: str) -> bool:
  return '\\\\' in tokens.split()


def find_all_math(files: dict[str, str]) -> Iterator[tuple[Found, dict[str, Macro]]]:
  """Every formula of `files` (comments stripped), in path order, with the
  macros of its top-level folder (all of them collected before its first
  formula)."""
  groups = collections.defaultdict(dict)
  for path, text in files.items():
    groups[group_of(path)][path] = text
  for group, members in groups.items():
    macros: dict[str, Macro] = {}
    stripped = {p: strip_comments(t) for p, t in members.items()
                if p.endswith(MACRO_EXTS)}
    for text in stripped.values():
      collect_macros(text, macros)
    for path, text in stripped.items():
      if path.endswith(SOURCE_EXTS):
        for f in find_math(text, group):
          yield f, macros


def harvest(files: dict[str, str], *, min_tokens: int = 1,
            max_tokens: int = 150, check_commands: bool = False) -> Harvest:
  """Finds, expands, normalizes, deduplicates and length-filters formulas.

  With check_commands, formulas using a command that LaTeX (with the
  dataset's packages) does not define are dropped too (one pdflatex run
  asks; an undefined command is mostly a macro the document defined in a way
  this harvester does not expand).
  """
  found = 0
  dropped = collections.Counter()
  failures = []
  expanded = []
  for f, macros in find_all_math(files):
    found += 1
    if not f.latex.strip():
      dropped['empty'] += 1
      continue
    if '\\intertext' in f.latex:
      dropped['has \\intertext (text between lines)'] += 1
      continue
    try:
      expanded.append((f, operator_forms(expand_macros(f.latex, macros))))
    except ValueError as e:
      dropped['macro expansion failed: ' + _reason(str(e))] += 1
      failures.append((str(e), f.latex))
  results = normalize_lib.normalize_many(latex for _, latex in expanded)
  kept, displays, sources, seen = [], [], [], set()
  for (f, latex), res in zip(expanded, results):
    if not res.ok:
      dropped['does not normalize: ' + _reason(res.error)] += 1
      if len(failures) < 2000:
        failures.append((res.error, latex))
      continue
    n = len(res.tokens.split())
    if n < min_tokens:
      dropped[f'shorter than {min_tokens} tokens'] += 1
    elif n > max_tokens:
      dropped[f'longer than {max_tokens} tokens'] += 1
    elif res.tokens in seen:
      dropped['duplicate'] += 1
    else:
      seen.add(res.tokens)
      kept.append(res.tokens)
      displays.append(f.display)
      sources.append(f.source or '.')
  undefined = collections.Counter()
  if check_commands and kept:
    from im2latex_jax.datagen import render  # pylint: disable=g-import-not-at-top
    names = [set(_CONTROL_WORD.findall(f)) for f in kept]
    unknown = render.undefined_commands(set().union(*names))
    keep = [not (n & unknown) for n in names]
    for ok, n in zip(keep, names):
      if not ok:
        dropped['undefined command'] += 1
        undefined.update(n & unknown)
    kept, displays, sources = ([x for x, ok in zip(seq, keep) if ok]
                               for seq in (kept, displays, sources))
  return Harvest(kept, displays, found, dropped, sources, failures,
                 undefined)


def _licence_files(files: dict[str, str]) -> dict[str, str]:
  """The licence files at the top of each source folder; a folder without
  one gives its README (where a licence is often stated) instead."""
  top = {p: t for p, t in files.items() if p.count(os.sep) <= 1}
  out = {p: t for p, t in top.items() if LICENSE_NAMES.match(os.path.basename(p))}
  covered = {group_of(p) for p in out}
  for p, t in top.items():
    if README_NAMES.match(os.path.basename(p)) and group_of(p) not in covered:
      out[p] = t
  return dict(sorted(out.items()))


def _write_readme(out: str, src: str, files: dict[str, str],
                  report: dict) -> None:
  lic_dir = os.path.join(out, 'licenses')
  licences = []
  for path, text in _licence_files(files).items():
    dest = os.path.join(lic_dir, path.replace(os.sep, '__'))
    os.makedirs(lic_dir, exist_ok=True)
    with open(dest, 'w', encoding='utf-8') as f:
      f.write(text)
    licences.append(os.path.relpath(dest, out))
  lines = [
      '# Formulas harvested from LaTeX sources', '',
      f'Made by `im2latex-jax harvest --src {os.path.basename(src)}` '
      '(im2latex_jax/latex/harvest.py). The formulas are the sources\' own '
      'math, normalized into im2latex-100k\'s token form; the images are '
      'pdflatex renders of those tokens. They keep the licences of the '
      'sources they came from (a README is copied where a folder has no '
      'licence file):', '']
  lines += [f'- `{p}`' for p in licences] or ['- (no licence file was found '
                                              'in the source: check before '
                                              'redistributing)']
  lines += ['', '## Counts', '', '```', json.dumps(report, indent=1), '```', '']
  with open(os.path.join(out, 'README.md'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))


RENDER_CHUNK = 5000


def _render_chunks(formulas: list[str], workers: int, chunk: int = RENDER_CHUNK):
  """Yields [(RenderResult with its index in `formulas`, processed image or
  None)] per chunk of formulas (bounded memory), with progress lines."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  from im2latex_jax.data import processing  # pylint: disable=g-import-not-at-top
  from im2latex_jax.datagen import render  # pylint: disable=g-import-not-at-top
  progress = console.Progress(len(formulas), 'formulas', 'rendered')
  for lo in range(0, len(formulas), chunk):
    results = render.render_formulas(formulas[lo:lo + chunk], workers=workers,
                                     progress=lambda n, lo=lo: progress.update(lo + n))
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
      images = list(pool.map(
          lambda r: None if r.image is None else processing.process_im2markup(r.image),
          results))
    yield [(dataclasses.replace(r, index=r.index + lo, image=None), im)
           for r, im in zip(results, images)]


def validation_share(tokens: str) -> float:
  """A formula's place in [0, 1), from its tokens: the same split every run."""
  return zlib.crc32(tokens.encode('utf-8')) / 2**32


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog=argv[0], description=__doc__.split('\n\n')[0])
  parser.add_argument('--src', required=True,
                      help='folder, tarball (.tar/.tar.gz/.tgz) or .tex file')
  parser.add_argument('--out', required=True, help='output folder (created)')
  parser.add_argument('--validation-fraction', type=float, default=0.05,
                      help='share of the formulas listed as validation (chosen '
                           'by a hash of the tokens); the rest is train')
  parser.add_argument('--min-tokens', type=int, default=1)
  parser.add_argument('--max-tokens', type=int, default=150,
                      help='longest formula kept, in tokens (im2markup '
                           'trains on <= 150)')
  parser.add_argument('--limit', type=int, default=None,
                      help='keep at most the first N unique formulas')
  parser.add_argument('--no-render', action='store_true',
                      help='write the formulas only (no images, no render check)')
  parser.add_argument('--workers', type=int, default=2)
  args = parser.parse_args(argv[1:])
  from im2latex_jax.data import layout  # pylint: disable=g-import-not-at-top
  try:
    if not 0 <= args.validation_fraction < 1:
      raise ValueError(f'--validation-fraction {args.validation_fraction} must '
                       'be in [0, 1)')
    files = read_sources(args.src)
    if not any(p.endswith(SOURCE_EXTS) for p in files):
      raise ValueError(f'no .tex file in {args.src}')
    normalize_lib.node_binary()
    if not args.no_render:
      from im2latex_jax.datagen import render  # pylint: disable=g-import-not-at-top
      render.check_tex()
  except (ValueError, RuntimeError, OSError, tarfile.TarError) as e:
    sys.stderr.write(f'{argv[0]}: {e}\n')
    return 2
  n_tex = sum(p.endswith(SOURCE_EXTS) for p in files)
  start = time.time()
  h = harvest(files, min_tokens=args.min_tokens, max_tokens=args.max_tokens,
              check_commands=not args.no_render)
  if args.limit is not None:
    del h.formulas[args.limit:], h.displays[args.limit:], h.sources[args.limit:]
  print(f'found {h.found} formulas in {n_tex} .tex files; {len(h.formulas)} '
        f'unique after normalizing ({time.time() - start:.1f} s)'
        + ('' if args.no_render else '; rendering them'), flush=True)
  os.makedirs(args.out, exist_ok=True)
  # Line i of the formula file is unique formula i; the split lists name only
  # those that rendered (the others are in render_failures.tsv).
  is_val = [validation_share(f) < args.validation_fraction for f in h.formulas]
  render_failed, failures, kept = collections.Counter(), [], []
  if args.no_render:
    kept = list(range(len(h.formulas)))
    with open(os.path.join(args.out, layout.FORMULAS_FILE), 'w', encoding='utf-8') as f:
      f.writelines(x + '\n' for x in h.formulas)
  else:
    validation = []

    def train_images():
      """Renders chunk by chunk (bounded memory, a progress line each),
      yielding train images and keeping the validation ones aside."""
      for results in _render_chunks(h.formulas, args.workers):
        for r, image in results:
          if image is None:
            render_failed[_reason(' '.join(str(r.error).split()))] += 1
            failures.append((r.index, r.error))
            continue
          kept.append(r.index)
          item = (r.index, f'{"val" if is_val[r.index] else "train"}_'
                  f'{r.index:06d}.png', image)
          if is_val[r.index]:
            validation.append(item)
          else:
            yield item

    layout.write_dataset(args.out, h.formulas, 'train', train_images())
    layout.write_dataset(args.out, h.formulas, 'validation', validation,
                         failures=failures)
  formulas = [h.formulas[i] for i in kept]
  multi = sum(is_multiline(f) for f in formulas)
  n_val = sum(is_val[i] for i in kept)
  report = {
      'source': os.path.basename(os.path.normpath(args.src)),
      'tex_files': n_tex,
      'found': h.found,
      'dropped_total': sum(h.dropped.values()),
      'dropped': dict(h.dropped.most_common(30)),
      'undefined_commands': dict(h.undefined.most_common(30)),
      'render_failed': sum(render_failed.values()),
      'render_failed_by_error': dict(render_failed.most_common(20)),
      'kept': len(formulas),
      'kept_single_line': len(formulas) - multi,
      'kept_multi_line': multi,
      'kept_display': sum(h.displays[i] for i in kept),
      'kept_by_source': dict(collections.Counter(h.sources[i] for i in kept)),
      'train': len(formulas) - n_val, 'validation': n_val,
      'min_tokens': args.min_tokens, 'max_tokens': args.max_tokens,
      'seconds': round(time.time() - start, 1),
      'workers': args.workers,
  }
  with open(os.path.join(args.out, 'harvest_report.json'), 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(args.out, 'normalize_failures.tsv'), 'w', encoding='utf-8') as f:
    for reason, latex in h.failures:
      f.write(f'{" ".join(reason.split())}\t{latex}\n')
  _write_readme(args.out, args.src, files, report)
  print(f'kept {report["kept"]} formulas ({multi} multi-line; train '
        f'{report["train"]}, validation {n_val}) of {h.found} found; dropped '
        f'{report["dropped_total"]} before rendering, {report["render_failed"]} '
        f'did not render; {report["seconds"]:.0f} s -> {args.out} '
        '(harvest_report.json has the reasons)')
  return 0
