"""Tests for im2latex_jax.datagen.formula_gen: new formulas from training formulas."""

import os
import pathlib
import shutil

import pytest

from im2latex_jax.datagen import formula_gen

TRAIN = [
    'x ^ { 2 } + y ^ { 2 } = r ^ { 2 }',
    '\\frac { a + b } { 2 } \\geq \\sqrt { a b }',
    '\\sum _ { i = 1 } ^ { n } i = \\frac { n ( n + 1 ) } { 2 }',
    'E = m c ^ { 2 }',
    '\\int _ { 0 } ^ { \\infty } e ^ { - x } d x = 1',
    '\\alpha \\beta \\leq \\gamma _ { \\mu \\nu }',
    '\\hspace { 1 c m } \\mathrm { d } s ^ { 2 } = \\Omega \\, d t ^ { 2 }',
    '\\left( \\begin{array} { c c } { a } & { b } \\\\ { c } & { d } '
    '\\end{array} \\right) \\times \\Gamma',
    '\\mbox { f o r } \\; x \\in A',
    'f ( x ) = \\hat { x } - \\tilde { y } \\cdot \\prod _ { k } z _ { k }',
]


def _shared():
  env = os.environ.get('IM2LATEX_SHARED')
  root = pathlib.Path(env) if env else (
      pathlib.Path(__file__).resolve().parents[1].parent / 'shared')
  return root / 'data' / 'im2latex100k'


def _balanced(f):
  depth = 0
  for t in f.split():
    depth += {'{': 1, '}': -1}.get(t, 0)
    if depth < 0:
      return False
  return depth == 0


def test_parse_kinds():
  toks = '\\frac { a ^ { 2 } } { b _ { i } } \\hat { c } { d }'.split()
  kinds = [(g.kind, ' '.join(g.tokens(toks))) for g in formula_gen.parse(toks)]
  assert kinds == [('\\frac#0', '{ a ^ { 2 } }'), ('^', '{ 2 }'),
                   ('\\frac#1', '{ b _ { i } }'), ('_', '{ i }'),
                   ('\\hat#0', '{ c }'), ('{}', '{ d }')]
  gs = formula_gen.parse(toks)
  assert gs[1].parent == 0 and gs[0].parent == -1


def test_parse_rejects_unbalanced():
  with pytest.raises(formula_gen.ParseError):
    formula_gen.parse('{ a'.split())
  with pytest.raises(formula_gen.ParseError):
    formula_gen.parse('a }'.split())


def test_generate_properties():
  out = formula_gen.generate_formulas(TRAIN, 300, seed=0)
  assert len(out) == 300
  assert len(set(out)) == len(out)
  assert not set(out) & set(TRAIN)
  vocab = {t for f in TRAIN for t in f.split()}
  for f in out:
    assert _balanced(f), f
    assert set(f.split()) <= vocab, f
    assert len(f.split()) <= formula_gen.MAX_TOKENS


def test_protected_parts_unchanged():
  out = formula_gen.generate_formulas(TRAIN, 300, seed=1)
  for f in out:
    if '\\hspace' in f:
      assert '\\hspace { 1 c m }' in f, f
    if '\\begin{array}' in f:
      assert '\\begin{array} { c c }' in f, f
      assert f.count('&') == 2, f
    if '\\mbox' in f:
      inner = f.split('\\mbox {')[1].split('}')[0].split()
      assert all(t.isalnum() for t in inner), f


def test_deterministic_per_seed():
  a = formula_gen.generate_formulas(TRAIN, 100, seed=3)
  b = formula_gen.generate_formulas(TRAIN, 100, seed=3)
  c = formula_gen.generate_formulas(TRAIN, 100, seed=4)
  assert a == b and a != c


def test_both_edit_kinds_occur():
  out = formula_gen.generate_formulas(TRAIN, 200, seed=0)
  same_skeleton = sum(any(len(f.split()) == len(t.split()) for t in TRAIN)
                      for f in out)
  assert 0 < same_skeleton < len(out)  # substitutions and recombinations


def test_cli(tmp_path):
  formulas = tmp_path / 'formulas.lst'
  formulas.write_text('\n'.join(TRAIN + ['z = w ^ { 3 }']) + '\n')
  split = tmp_path / 'train.lst'
  # The last formula is "evaluation": not in the list, never used.
  split.write_text(''.join(f'img{i}.png {i}\n' for i in range(len(TRAIN))))
  out = tmp_path / 'gen.lst'
  rc = formula_gen.main(['im2latex-jax gen-formulas', '--formulas', str(formulas), '--split-list',
                         str(split), '--n', '50', '--out', str(out)])
  assert rc == 0
  lines = out.read_text().splitlines()
  assert len(lines) == 50
  assert all('w' not in f.split() for f in lines)


def test_cli_bad_split_list_is_one_line(tmp_path, capsys):
  formulas = tmp_path / 'formulas.lst'
  formulas.write_text('a + b\nx\n')
  split = tmp_path / 'train.lst'
  split.write_text('img0.png 0\nimg1.png 2\n')  # 2 is one past the end
  rc = formula_gen.main(['im2latex-jax gen-formulas', '--formulas', str(formulas),
                         '--split-list', str(split), '--n', '5', '--out', str(tmp_path / 'o')])
  err = capsys.readouterr().err
  assert rc == 2 and f'{split}:2: formula index 2 is out of range' in err
  assert 'Traceback' not in err


def test_real_train_split_scale():
  d = _shared()
  if not (d / 'im2latex_train_filter.lst').exists():
    pytest.skip(f'im2latex100k data not found at {d}')
  train = formula_gen.read_split_formulas(
      str(d / 'im2latex_formulas.norm.lst'),
      [str(d / 'im2latex_train_filter.lst')])
  out = formula_gen.generate_formulas(train, 20000, seed=0)
  assert len(out) == 20000
  assert not set(out) & set(train)
  assert all(_balanced(f) for f in out)


@pytest.mark.tex
def test_generated_formulas_compile():
  if shutil.which('pdflatex') is None:
    pytest.skip('pdflatex not installed')
  render = pytest.importorskip('im2latex_jax.datagen.render')
  out = formula_gen.generate_formulas(TRAIN, 40, seed=0)
  results = render.render_formulas(out, dpi=50, workers=2)
  failed = [(out[r.index], r.error) for r in results if r.error]
  assert len(failed) <= 1, failed


def test_read_split_formulas_takes_a_slice_of_a_list(tmp_path):
  # The holdout protocol passes `validate.lst:0:7475`: only those lines count.
  (tmp_path / 'f.lst').write_text('a\nb\nc\nd\n')
  (tmp_path / 's.lst').write_text('x0.png 3\nx1.png 1\nx2.png 0\n')
  read = formula_gen.read_split_formulas
  assert read(str(tmp_path / 'f.lst'), [str(tmp_path / 's.lst')]) == ['d', 'b', 'a']
  assert read(str(tmp_path / 'f.lst'), [str(tmp_path / 's.lst:0:2')]) == ['d', 'b']
  assert read(str(tmp_path / 'f.lst'), [str(tmp_path / 's.lst:1:')]) == ['b', 'a']
