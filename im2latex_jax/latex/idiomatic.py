"""Token form -> the LaTeX a person writes (what predict, the API and the page answer).

The model reads and writes im2latex-100k's normalized token form:
`\\operatorname { t a n h } ^ { 2 }`, `C _ { n 1 }`, `\\mathrm { d } x`. It is the
right form to train on and to score with the paper's metrics, and the wrong
one to paste into a document. `to_idiomatic` rewrites it:

  `\\operatorname { t a n h } ^ { 2 }`          -> `\\tanh^{2}`
  `\\operatorname* { l i m } _ { t \\rightarrow \\infty }`
                                                -> `\\lim_{t\\rightarrow\\infty}`
  `\\operatorname { s p a n }`                  -> `\\operatorname{span}`
  `C _ { n 1 }`, `\\mathrm { a b c }`           -> `C_{n1}`, `\\mathrm{abc}`
  `{ { a + b } }`, `{ x } ^ { 2 }`              -> `{a+b}`, `x^{2}`
  `\\begin{array} { c c } { a } & { b } \\\\ \\end{array}`
                                                -> `\\begin{array}{cc} a & b \\end{array}`

Rules, each chosen so that the result renders as the tokens do (except
where the token form itself lost what the source showed: `\\liminf`'s thin
space, SPACED_OPERATORS, and the words of text-mode commands, TEXT_MODE;
measured by
`benchmarks/idiomatic_renders.py` over the 11,475 formulas of the bundled
data, BENCHMARKS.md):
- named operators become the command LaTeX defines, with its limits
  convention (`\\operatorname*` = limits above/below: `\\lim`, `\\max`, ...;
  plain `\\operatorname`: `\\sin`, `\\log`, ...); other names stay
  `\\operatorname{name}`;
- a group whose only content is another group loses one pair of braces; a
  free-standing group (not an argument, not a script's base) around a single
  letter or digit loses its braces. Braces around anything else stay: TeX
  spaces a braced subformula as one ordinary atom (`{=}`, `{\\frac12}` and
  `{\\sum}_i` render differently without them);
- tokens are joined without spaces, except where LaTeX needs one (a control
  word followed by a letter: `\\alpha x`) and around `&` and `\\\\` of arrays,
  for reading.
"""

from __future__ import annotations

import re
from typing import Sequence, Union

# The named operators of LaTeX (and of im2markup's parser), by how the token
# form spells them: `\operatorname` (limits beside) or `\operatorname*`
# (limits above/below in display).
OPERATORS = frozenset((
    'arcsin', 'arccos', 'arctan', 'arg', 'cos', 'cosh', 'cot', 'coth', 'csc',
    'deg', 'dim', 'exp', 'hom', 'ker', 'lg', 'ln', 'log', 'sec', 'sin', 'sinh',
    'tan', 'tanh'))
LIMIT_OPERATORS = frozenset((
    'det', 'gcd', 'inf', 'lim', 'liminf', 'limsup', 'max', 'min', 'Pr', 'sup'))
# Commands that render differently from their spelled-out token form: LaTeX
# sets `\liminf` as "lim inf" (a thin space), the tokens as "liminf". The
# command is what the source said (the token form lost the space), so it is
# kept; `benchmarks/idiomatic_renders.py` lists these renders as differing
# by design.
SPACED_OPERATORS = frozenset(('liminf', 'limsup'))
# Text-mode commands: the token form spells their words letter by letter
# (`\textrm { a n d }`), which LaTeX sets as "a n d" in text mode; joined,
# `\textrm{and}` sets "and", as the source and its image had it. The
# renders differ by design (benchmarks/idiomatic_renders.py lists them).
TEXT_MODE = frozenset(('\\text', '\\textrm', '\\textup', '\\textit', '\\textbf',
                       '\\textsf', '\\texttt', '\\textnormal', '\\mbox', '\\hbox',
                       '\\makebox', '\\fbox', '\\framebox', '\\raisebox', '\\rlap',
                       '\\llap'))
# Cells that keep their braces: glue and vertical space act on the group, and
# amsmath's dots space themselves by the token that follows (`}` or `&`).
_CONFINED = ('\\vspace', '\\hfill', '\\hfil', '\\cdots', '\\ldots', '\\dots',
             '\\vdots', '\\ddots')

_CONTROL_WORD = re.compile(r'\\[A-Za-z]+\*?$')
_STARTS_LETTER = re.compile(r'[A-Za-z]')
_SIMPLE = re.compile(r'[A-Za-z0-9]$')
# Tokens after which a group is not an argument: ordinary material.
_ARGUMENT_TAKERS = re.compile(r'(\\[A-Za-z]+\*?|\^|_|\\begin\{[a-z*]+\}|\[|\])$')
_SPACED = ('&', '\\\\')
_ENV_BEGIN = re.compile(r'\\begin\{[A-Za-z*]+\}$')
_ENV_END = re.compile(r'\\end\{[A-Za-z*]+\}$')
_SPEC_ENVS = ('\\begin{array}', '\\begin{tabular}')
_BEGIN_SPEC = re.compile(r'(\\begin\{(?:array|tabular)\}\{[^{}]*\}|'
                         r'\\begin\{(?!array\}|tabular\})[A-Za-z*]+\})')

Node = Union[str, list]  # a token, or a braced group (list of nodes)


def _parse(tokens: Sequence[str]) -> list[Node] | None:
  """Nests braced groups; None if the braces do not balance."""
  stack: list[list[Node]] = [[]]
  for t in tokens:
    if t == '{':
      stack.append([])
    elif t == '}':
      if len(stack) == 1:
        return None
      group = stack.pop()
      stack[-1].append(group)
    else:
      stack[-1].append(t)
  return stack[0] if len(stack) == 1 else None


def _operator(command: str, group: list[Node]) -> str | None:
  """`\\tanh` for (`\\operatorname`, [t, a, n, h]); None if not a name."""
  if not group or not all(isinstance(t, str) and len(t) == 1 and t.isalpha()
                          for t in group):
    return None
  name = ''.join(group)
  if command == '\\operatorname' and name in OPERATORS:
    return '\\' + name
  if command == '\\operatorname*' and name in LIMIT_OPERATORS:
    return '\\' + name
  return None


def _simplify(nodes: list[Node]) -> list[Node]:
  """Operators named, redundant braces dropped, in one sequence (recursive)."""
  out: list[Node] = []
  i = 0
  while i < len(nodes):
    node = nodes[i]
    nxt = nodes[i + 1] if i + 1 < len(nodes) else None
    if node in ('\\operatorname', '\\operatorname*') and isinstance(nxt, list):
      name = _operator(node, nxt)
      out.extend([name] if name else [node, _simplify(nxt)])
      i += 2
      continue
    if isinstance(node, list):
      group = _simplify(node)
      while len(group) == 1 and isinstance(group[0], list):
        group = group[0]  # {{X}} -> {X}
      prev = out[-1] if out else None
      # (After `\\\\` a cell opening with `[` would read as `\\\\[2pt]`.)
      if (_is_cell(out, nxt) and not any(c in group for c in _CONFINED)
          and not (group and group[0] == '[' and prev == '\\\\')):
        out.extend(group)  # a whole array cell: its own math list already
        i += 1
        continue
      is_argument = isinstance(prev, list) or (
          isinstance(prev, str) and _ARGUMENT_TAKERS.match(prev))
      if (not is_argument and len(group) == 1 and isinstance(group[0], str)
          and _SIMPLE.match(group[0])):
        out.append(group[0])  # { x } -> x
      else:
        out.append(group)
      i += 1
      continue
    if (node == '\\\\' and isinstance(nxt, str) and _ENV_END.match(nxt)
        and out and out[-1] not in ('\\\\', '\\hline', '&')):
      i += 1  # the last row's break: the environment ends the row anyway
      continue  # (kept after an empty row, which it would otherwise remove)
    out.append(node)
    i += 1
  return out


def _is_cell(out: list[Node], nxt: Node | None) -> bool:
  """Whether a group between `out` and `nxt` is a whole cell of an array."""
  prev = out[-1] if out else None
  if isinstance(prev, list):  # the column spec: \begin{array} { c c }
    starts = len(out) >= 2 and out[-2] in _SPEC_ENVS
  else:
    starts = prev in ('&', '\\\\', '\\hline') or (
        isinstance(prev, str) and _ENV_BEGIN.match(prev) is not None
        and prev not in _SPEC_ENVS)
  ends = nxt in ('&', '\\\\') or (isinstance(nxt, str) and
                                 _ENV_END.match(nxt) is not None)
  return starts and ends


def _flatten(nodes: list[Node]) -> list[str]:
  out: list[str] = []
  for n in nodes:
    if isinstance(n, list):
      out.append('{')
      out.extend(_flatten(n))
      out.append('}')
    else:
      out.append(n)
  return out


def join_tokens(tokens: Sequence[str]) -> str:
  """Joins tokens with a space only where LaTeX needs one (and around & and \\\\)."""
  parts: list[str] = []
  prev = ''
  for t in tokens:
    if t in _SPACED:
      parts.append(f' {t} ')
    elif t == '\\':
      parts.append('\\ ')  # a control space
    elif prev and _CONTROL_WORD.search(prev) and _STARTS_LETTER.match(t):
      parts.append(' ' + t)  # `\alpha x`, not `\alphax`
    else:
      parts.append(t)
    prev = t
  text = ''.join(parts)
  # An environment's body set apart from its \begin{..}{spec} and \end{..}.
  text = _BEGIN_SPEC.sub(r'\1 ', text)
  text = re.sub(r' *(\\end\{)', r' \1', text)
  # Never fewer than one space where there was one, so `\ ` (a control
  # space) keeps its own; a trailing one stays unless it is a separator.
  text = re.sub(' {2,}', ' ', text).lstrip()
  body = text.rstrip()
  odd = (len(body) - len(body.rstrip('\\'))) % 2 == 1
  return body + ' ' if odd and text != body else body


def to_idiomatic(tokens: Sequence[str] | str) -> str:
  """The idiomatic LaTeX of a token-form formula (a string or a token list).

  Unbalanced braces (a truncated answer) are written back unchanged, only
  joined.
  """
  if isinstance(tokens, str):
    tokens = tokens.split()
  tree = _parse(tokens)
  if tree is None:
    return join_tokens(tokens)
  return join_tokens(_flatten(_simplify(tree)))
