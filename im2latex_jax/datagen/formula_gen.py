"""New valid formulas from the training formulas, for synthetic training data.

Formulas are im2latex-100k's space-tokenized, KaTeX-normalized LaTeX. Each is
parsed into a tree of brace groups, every group labelled with its *kind*,
the role it plays: a superscript (`^ { … }`), a subscript, the numerator or
denominator of `\\frac`, the argument of `\\sqrt`, `\\hat`, `\\mathrm`, … or a
bare `{ … }`. New formulas come from two edits, alone or together:

  (a) recombination: replace a group with a group of the same kind taken
      from another training formula (swap a superscript, a fraction part);
  (b) substitution: rename a few symbols to others of the same class (Latin
      letters, Greek letters, digits, binary operators, relations, big
      operators), consistently within the formula.

Both keep braces balanced by construction, and kinds keep arguments where
LaTeX accepts them. Groups whose content is not math (dimensions such as
`\\hspace { 1 c m }`, array column specs, labels) are never edited, nor are
groups holding `&`, `\\\\` or environments (column counts must still agree);
text arguments (`\\mbox`, `\\textrm`) only get letters and digits. Every
emitted token is a token of the input formulas.

Only the formulas passed in are used: give it the training split, never the
evaluation ones. Command line:

  im2latex-jax gen-formulas --formulas im2latex_formulas.norm.lst \\
      --split-list im2latex_train_filter.lst --n 20000 --out generated.lst
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import random
import string
import sys
from typing import Sequence

from im2latex_jax.data import layout

# Commands taking several brace arguments; the kind of their i-th group is
# (command, i). Any other command's first group is (command, 0).
_ARITY = {'\\frac': 2, '\\dfrac': 2, '\\tfrac': 2, '\\binom': 2,
          '\\stackrel': 2, '\\overset': 2, '\\underset': 2, '\\rule': 2,
          '\\raisebox': 2, '\\genfrac': 6, '\\textcolor': 2}
# Arguments that are dimensions, names or specs, not math: never edited.
_PROTECTED_CMDS = frozenset({
    '\\hspace', '\\vspace', '\\hspace*', '\\vspace*', '\\rule', '\\raisebox',
    '\\mspace', '\\label', '\\ref', '\\cite', '\\color', '\\textcolor',
    '\\fontsize', '\\setlength', '\\begin', '\\end', '\\pagecolor',
    '\\hphantom', '\\vphantom'})
# Dimension commands without braces: `\kern 2 p t`.
_DIM_NOBRACE = frozenset({'\\kern', '\\mkern', '\\hskip', '\\vskip',
                          '\\mskip', '\\raise', '\\lower', '\\moveleft',
                          '\\moveright', '\\hglue', '\\vglue'})
# Text-mode arguments: Greek or operators there stop pdflatex.
_TEXT_CMDS = frozenset({'\\mbox', '\\hbox', '\\text', '\\textrm', '\\textup',
                        '\\textit', '\\textbf', '\\textsf', '\\texttt',
                        '\\fbox', '\\textnormal', '\\textsl', '\\emph'})
# Tokens after which a group cannot be exchanged for another.
_STRUCTURE_TOKENS = frozenset({'&', '\\\\', '\\hline', '\\cr', '\\over',
                               '\\atop', '\\choose', '\\label', '\\nonumber',
                               '\\notag', '\\tag'})

# Symbol classes for substitution; only members also present in the input
# formulas are ever emitted.
SYMBOL_CLASSES: dict[str, frozenset[str]] = {
    'latin_lower': frozenset(string.ascii_lowercase),
    'latin_upper': frozenset(string.ascii_uppercase),
    'digit': frozenset(string.digits),
    'greek_lower': frozenset(
        '\\' + g for g in (
            'alpha beta gamma delta epsilon varepsilon zeta eta theta '
            'vartheta iota kappa lambda mu nu xi pi varpi rho varrho sigma '
            'varsigma tau upsilon phi varphi chi psi omega').split()),
    'greek_upper': frozenset(
        '\\' + g for g in
        'Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega'.split()),
    'binary_op': frozenset(
        ['+', '-', '\\pm', '\\mp', '\\times', '\\cdot', '\\ast', '\\star',
         '\\circ', '\\bullet', '\\oplus', '\\otimes', '\\cap', '\\cup',
         '\\wedge', '\\vee', '\\div', '\\odot', '\\ominus']),
    'relation': frozenset(
        ['=', '<', '>', '\\leq', '\\geq', '\\le', '\\ge', '\\neq', '\\ne',
         '\\sim', '\\simeq', '\\approx', '\\equiv', '\\cong', '\\propto',
         '\\subset', '\\supset', '\\subseteq', '\\supseteq', '\\in', '\\ni',
         '\\ll', '\\gg', '\\perp', '\\to', '\\rightarrow', '\\leftarrow',
         '\\Rightarrow', '\\leftrightarrow', '\\longrightarrow', '\\mapsto',
         '\\doteq', '\\prec', '\\succ']),
    'big_op': frozenset(
        ['\\sum', '\\prod', '\\int', '\\oint', '\\iint', '\\iiint',
         '\\coprod', '\\bigoplus', '\\bigotimes', '\\bigcup', '\\bigcap',
         '\\bigvee', '\\bigwedge']),
}
_TEXT_SAFE_CLASSES = ('latin_lower', 'latin_upper', 'digit')
# im2markup's train filter: at most 150 tokens.
MAX_TOKENS = 150
# Groups longer than this are not transplanted (they are whole formulas).
MAX_GROUP_TOKENS = 40


@dataclasses.dataclass(frozen=True)
class Group:
  """A brace group `{ … }`: tokens[start] == '{', tokens[end] == '}'."""
  start: int
  end: int
  # '^', '_', '{}' (bare) or (command, argument index) as a string 'cmd#i'.
  kind: str
  # Index of the enclosing group in the list `parse` returns, or -1.
  parent: int
  # No math inside (dimensions, specs, labels): never edited.
  protected: bool
  # Text-mode argument: only letters and digits may change.
  text: bool

  def tokens(self, tokens: Sequence[str]) -> tuple[str, ...]:
    return tuple(tokens[self.start:self.end + 1])


class ParseError(ValueError):
  """The formula's braces do not balance."""


def parse(tokens: Sequence[str]) -> list[Group]:
  """Parses a token list into its tree of brace groups (in opening order)."""
  groups: list[Group] = []
  stack: list[tuple[int, str, int, bool, bool]] = []
  # Per nesting level: (command, next argument index) awaiting arguments.
  pending: list[tuple[str, int] | None] = [None]
  for i, tok in enumerate(tokens):
    if tok == '{':
      prev = tokens[i - 1] if i else ''
      kind, waiting = '{}', pending[-1]
      if prev in ('^', '\\sp'):
        kind = '^'
      elif prev in ('_', '\\sb'):
        kind = '_'
      elif prev == '}' and waiting is not None:
        kind = f'{waiting[0]}#{waiting[1]}'
      elif prev.startswith('\\') and len(prev) > 1 and prev[1].isalpha():
        kind = f'{prev}#0'
        waiting = (prev, 0)
      cmd = kind.split('#')[0]
      if '#' in kind:
        nxt = waiting[1] + 1
        pending[-1] = (cmd, nxt) if nxt < _ARITY.get(cmd, 1) else None
      else:
        pending[-1] = None
      parent = stack[-1] if stack else None
      protected = (cmd in _PROTECTED_CMDS or cmd.startswith('\\begin') or
                   (parent is not None and parent[3]))
      text = cmd in _TEXT_CMDS or (parent is not None and parent[4])
      stack.append((i, kind, len(groups), protected, text))
      groups.append(Group(i, -1, kind, parent[2] if parent else -1,
                          protected, text))
      pending.append(None)
    elif tok == '}':
      if not stack:
        raise ParseError(f'unmatched "}}" at token {i}')
      start, kind, gi, _, _ = stack.pop()
      groups[gi] = dataclasses.replace(groups[gi], end=i)
      pending.pop()
    else:
      # Any other token ends a command's argument list
      # (`\frac { a } { b } x { c }`: { c } is no argument of \frac).
      pending[-1] = None
  if stack:
    raise ParseError(f'{len(stack)} unclosed "{{"')
  return groups


def _protected_tokens(tokens: Sequence[str], groups: Sequence[Group]
                      ) -> tuple[list[bool], list[bool]]:
  """Per token: (never substitute, text mode)."""
  protected = [False] * len(tokens)
  text = [False] * len(tokens)
  for g in groups:
    for j in range(g.start, g.end + 1):
      protected[j] |= g.protected
      text[j] |= g.text
  for i, tok in enumerate(tokens):
    if tok in _DIM_NOBRACE:
      # `\kern - 0 . 5 e m`: the number and its unit letters.
      for j in range(i + 1, min(i + 9, len(tokens))):
        if not (tokens[j] in '-+.' or tokens[j].isalnum()):
          break
        protected[j] = True
    if tok == '\\\\' and i + 1 < len(tokens) and tokens[i + 1] == '[':
      j = i + 1
      while j < len(tokens) and tokens[j] != ']':
        protected[j] = True
        j += 1
  return protected, text


def _swappable(tokens: Sequence[str], g: Group) -> bool:
  if g.protected or g.text and not g.kind.startswith('\\'):
    return False
  if g.end - g.start - 1 > MAX_GROUP_TOKENS:
    return False
  inner = tokens[g.start + 1:g.end]
  return not any(t in _STRUCTURE_TOKENS or t.startswith('\\begin') or
                 t.startswith('\\end') for t in inner)


class FormulaGenerator:
  """Indexes the training formulas once; `sample` draws one new formula."""

  def __init__(self, train_formulas: Sequence[str]):
    self.sources: list[list[str]] = []
    self.groups: list[list[Group]] = []
    pool: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    vocab: set[str] = set()
    for f in train_formulas:
      toks = f.split()
      if not toks:
        continue
      try:
        gs = parse(toks)
      except ParseError:
        continue  # Unbalanced sources would only breed broken formulas.
      self.sources.append(toks)
      self.groups.append(gs)
      vocab.update(toks)
      for g in gs:
        if _swappable(toks, g):
          pool[g.kind].add(g.tokens(toks))
    # Sorted for determinism: set order varies between interpreter runs.
    self.pool = {k: sorted(v) for k, v in sorted(pool.items()) if len(v) > 1}
    self.vocab = frozenset(vocab)
    self.classes = {name: sorted(members & vocab)
                    for name, members in SYMBOL_CLASSES.items()}
    self.class_of = {t: name for name, ts in self.classes.items()
                     for t in ts if len(ts) > 1}

  def _recombine(self, rng: random.Random, toks: list[str]) -> list[str]:
    gs = [g for g in parse(toks)
          if g.kind in self.pool and _swappable(toks, g)]
    if not gs:
      return toks
    g = rng.choice(gs)
    old = g.tokens(toks)
    new = rng.choice(self.pool[g.kind])
    if new == old:
      return toks
    return toks[:g.start] + list(new) + toks[g.end + 1:]

  def _substitute(self, rng: random.Random, toks: list[str]) -> list[str]:
    protected, text = _protected_tokens(toks, parse(toks))
    present = collections.defaultdict(set)
    for t, p, tx in zip(toks, protected, text):
      cls = self.class_of.get(t)
      if cls and not p and (not tx or cls in _TEXT_SAFE_CLASSES):
        present[cls].add(t)
    if not present:
      return toks
    mapping = {}
    for cls in rng.sample(sorted(present), min(len(present),
                                               rng.randint(1, 2))):
      for t in rng.sample(sorted(present[cls]),
                          min(len(present[cls]), rng.randint(1, 2))):
        mapping[t] = rng.choice([c for c in self.classes[cls] if c != t])
    return [mapping.get(t, t) if not p and (
        not tx or self.class_of.get(t) in _TEXT_SAFE_CLASSES) else t
            for t, p, tx in zip(toks, protected, text)]

  def sample(self, rng: random.Random) -> str:
    toks = list(rng.choice(self.sources))
    r = rng.random()
    if r < 0.45 or not self.pool:
      toks = self._substitute(rng, toks)
    elif r < 0.8:
      toks = self._recombine(rng, toks)
    else:
      toks = self._substitute(rng, self._recombine(rng, toks))
    if len(toks) > MAX_TOKENS:
      return ''
    return ' '.join(toks)


def generate_formulas(train_formulas: list[str], n: int,
                      seed: int = 0) -> list[str]:
  """Returns up to n new formulas, distinct and none among the inputs.

  Args:
    train_formulas: space-tokenized normalized LaTeX, training split only.
    n: how many to generate.
    seed: the same seed and inputs give the same list.

  Returns:
    New formulas in generation order (fewer than n only when the inputs are
    too few to vary, after 50 n attempts).
  """
  gen = FormulaGenerator(train_formulas)
  if not gen.sources:
    return []
  rng = random.Random(seed)
  seen = {' '.join(f.split()) for f in train_formulas}
  out: list[str] = []
  for _ in range(50 * n):
    if len(out) >= n:
      break
    f = gen.sample(rng)
    if f and f not in seen:
      seen.add(f)
      out.append(f)
  return out


def read_split_formulas(formulas_path: str, split_lists: Sequence[str]
                        ) -> list[str]:
  """Formulas of the examples in im2markup split lists (`name index`), each
  once, in list order; each list `FILE` or `FILE:START:STOP` (a slice of its
  lines); read by data/layout.py (the one reader of the format)."""
  lines = layout.read_formulas(formulas_path)
  out, seen = [], set()
  for path in split_lists:
    for _, idx in layout.read_split_list_arg(path, len(lines)):
      if idx not in seen and lines[idx].strip():
        seen.add(idx)
        out.append(lines[idx].strip())
  return out


def main(argv: Sequence[str]) -> int:
  """`im2latex-jax gen-formulas`: writes generated formulas, one a line."""
  p = argparse.ArgumentParser(
      prog='im2latex-jax gen-formulas',
      description='Generate new formulas by recombining and substituting '
      'parts of the training formulas.')
  p.add_argument('--formulas', required=True,
                 help='im2latex_formulas.norm.lst (one formula a line)')
  p.add_argument('--split-list', required=True, action='append',
                 help='training split list(s) "<image> <formula index>", '
                 'FILE:START:STOP for a slice of its lines; repeat for several. '
                 'Never pass an evaluation split.')
  p.add_argument('--n', type=int, default=20000, help='how many formulas')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', required=True, help='output file, one a line')
  args = p.parse_args(list(argv)[1:])
  try:
    train = read_split_formulas(args.formulas, args.split_list)
  except (OSError, layout.DataFormatError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if not train:
    print(f'no formulas found through {args.split_list}', file=sys.stderr)
    return 1
  out = generate_formulas(train, args.n, args.seed)
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write(''.join(x + '\n' for x in out))
  print(f'{len(out)} new formulas from {len(train)} training formulas '
        f'-> {args.out}')
  return 0 if len(out) >= args.n else 2


if __name__ == '__main__':
  sys.exit(main(sys.argv))
