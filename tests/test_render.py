"""TeX rendering engine and im2markup's image metrics."""

import shutil

import numpy as np
import pytest

from im2latex_jax.evaluation import image_metrics as im
from im2latex_jax.datagen import render
from im2latex_jax.data import layout

tex = pytest.mark.skipif(shutil.which('pdflatex') is None or
                         shutil.which('pdftoppm') is None,
                         reason='needs pdflatex and pdftoppm')


# ---------------------------------------------------------------- repairs ---
def test_repair_old_forms_and_split_units():
  r = render.repair_formula
  assert r('\\pmatrix { a & b \\cr c & d }') == '\\mypmatrix { a & b \\cr c & d }'
  assert r('\\matrix { a }') == '\\mymatrix { a }'
  assert r('\\cases { a & b }') == '\\mycases { a & b }'
  # Environments and longer names are left alone.
  assert r('\\begin{matrix} a \\end{matrix}') == '\\begin{matrix} a \\end{matrix}'
  assert r('\\matrixfoo') == '\\matrixfoo'
  assert r('x \\hspace { 1 . 5 c m } y') == 'x \\hspace {1.5cm} y'
  assert r('\\vspace * { - 2 p t }') == '\\vspace * {-2pt}'
  assert r('\\rule { 1 m m } { 2 e x }') == '\\rule {1mm} {2ex}'
  assert r('a \\kern - 3 p t b') == 'a \\kern-3pt b'
  assert r('a \\mkern 2 m u b') == 'a \\mkern2mu b'
  assert r('%% a') == 'a'


# ------------------------------------------------------------- rendering ---
@pytest.mark.tex
@tex
def test_failing_formula_dropped_others_render():
  formulas = ['x ^ { 2 }', '\\frac { a } { b } \\undefinedmacro', 'a + b',
              'x ^ { 2', '\\alpha _ { i } \\beta', '',
              '\\pmatrix { a & b \\cr c & d }', 'x \\hspace { 1 c m } y']
  results = render.render_formulas(formulas, workers=1, chunk_size=100)
  assert [r.index for r in results] == list(range(len(formulas)))
  failed = {r.index: r.error for r in results if r.image is None}
  assert set(failed) == {1, 3, 5}, failed
  assert 'Undefined control sequence' in failed[1]
  assert 'Missing }' in failed[3]
  for r in results:
    if r.image is not None:
      assert r.image.dtype == np.uint8 and r.image.ndim == 2
      # Cropped to ink: the border rows and columns hold ink.
      assert r.image[0].min() < 255 and r.image[-1].min() < 255
      assert r.image[:, 0].min() < 255 and r.image[:, -1].min() < 255
  # The space repair works: \hspace{1cm} at 200 dpi is ~79 px of blank.
  assert results[7].image.shape[1] > 79


@pytest.mark.tex
@tex
def test_parallel_chunks_match_serial_and_scale():
  formulas = [f'x _ {{ {i} }} + \\frac {{ {i} }} {{ 2 }}' for i in range(12)]
  serial = render.render_formulas(formulas, workers=1, chunk_size=100)
  parallel = render.render_formulas(formulas, workers=2, chunk_size=3)
  for a, b in zip(serial, parallel):
    np.testing.assert_array_equal(a.image, b.image)
  big = render.render_formulas(['x'], font_size_pt=12, workers=1)[0].image
  small = render.render_formulas(['x'], font_size_pt=10, workers=1)[0].image
  assert big.shape[0] > small.shape[0]


@pytest.mark.tex
@tex
def test_cli_writes_dataset_layout(tmp_path, capsys):
  src = tmp_path / 'f.lst'
  src.write_text('a + b\n\\undefinedmacro\nx ^ { 2 }\nnot used\n')
  out = tmp_path / 'out'
  assert render.main(['im2latex-jax render', '--formulas', str(src), '--out', str(out), '--split',
                      'validation', '--limit', '3', '--workers', '1']) == 0
  # The split written is the one the builder reads (it used to write
  # im2latex_validation_filter.lst, which nothing read).
  assert layout.check_data_dir(str(out)) == ['validation']
  assert (out / 'im2latex_formulas.norm.lst').read_text().splitlines() == [
      'a + b', '\\undefinedmacro', 'x ^ { 2 }']
  lines = (out / 'im2latex_validate_filter.lst').read_text().splitlines()
  assert [l.split()[1] for l in lines] == ['0', '2']
  for line in lines:
    assert (out / 'formula_images_processed' / line.split()[0]).exists()
  fails = (out / 'render_failures.tsv').read_text().splitlines()
  assert len(fails) == 1 and fails[0].startswith('1\tUndefined control')
  assert 'formula 1' in capsys.readouterr().err
  # The TFDS builder reads the rendered split back.
  import ml_collections  # pylint: disable=g-import-not-at-top
  from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  builder = input_pipeline.get_builder(ml_collections.ConfigDict(
      {'manual_dir': str(out), 'data_dir': str(tmp_path / 'tfds')}))
  assert set(builder.info.splits.keys()) == {'validation'}
  got = sorted(ex['formula'].decode() for ex in
               builder.as_dataset(split='validation').as_numpy_iterator())
  assert got == ['a + b', 'x ^ { 2 }']


# ---------------------------------------------------- tolerant column rule ---
def _cols(width, height=20, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.random((width, height)) < 0.5).astype(np.uint8)


def test_tolerant_match_rules_on_synthetic_columns():
  gold = _cols(40)
  assert im.tolerant_match(gold, gold.copy())
  # Columns differing in < 5 pixels count as equal.
  near = gold.copy()
  near[:, :4] ^= 1
  assert im.tolerant_match(gold, near)
  far = gold.copy()
  far[10, :] ^= 1  # One column differs completely...
  assert im.tolerant_match(gold, far)  # ...a run of 1 < 5 columns.
  far[10:14, :] ^= 1  # A run of 4 replaced columns: still tolerated.
  far[10, :] ^= 1
  assert im.tolerant_match(gold, far)
  run5 = gold.copy()
  run5[10:15, :] = 1 - run5[10:15, :]
  assert not im.tolerant_match(gold, run5)
  # Deleting 5 gold columns breaks the match; inserting any number does not
  # (im2markup reads only the gold span of an edit block).
  assert not im.tolerant_match(gold, np.delete(gold, range(10, 15), axis=0))
  assert im.tolerant_match(gold, np.delete(gold, range(10, 14), axis=0))
  inserted = np.concatenate([gold[:10], _cols(8, seed=1), gold[10:]])
  assert im.tolerant_match(gold, inserted)


def _image(cols):
  """[W, H] 0/1 columns → uint8 [H, W] grayscale, ink black."""
  return np.where(cols.T == 1, 0, 255).astype(np.uint8)


def test_img_edit_distance_and_blank_columns():
  gold = _cols(30)
  gold[:, 0] = 1  # No blank column by chance.
  dist, ref, match, match_ws = im.img_edit_distance(_image(gold), _image(gold))
  assert (dist, ref, match, match_ws) == (0, 30, True, True)
  # Six blank columns inserted in the gold only: a deletion run of 6 for the
  # prediction, a miss with spaces and a match without.
  spaced = np.concatenate([gold[:15], np.zeros((6, 20), np.uint8), gold[15:]])
  dist, ref, match, match_ws = im.img_edit_distance(_image(spaced), _image(gold))
  assert (dist, ref, match, match_ws) == (6, 36, False, True)
  # Failed prediction: distance = #gold columns.
  assert im.img_edit_distance(_image(gold), None) == (30, 30, False, False)
  # Different heights are padded at the bottom before comparing.
  tall = np.concatenate([gold, np.zeros((30, 5), np.uint8)], axis=1)
  assert im.img_edit_distance(_image(gold), _image(tall))[:3] == (0, 30, True)
  agg = im.image_metrics_from_images([_image(gold), None, _image(spaced)],
                                     [_image(gold), _image(gold), _image(gold)])
  assert agg['image_num_evaluated'] == 2
  assert agg['image_edit_accuracy'] == pytest.approx(1 - 6 / 66)
  assert agg['image_exact_match'] == 0.5
  assert agg['image_exact_match_ws'] == 1.0


@pytest.mark.tex
@tex
def test_image_metrics_rendered():
  refs = ['\\frac { a } { b } + x ^ { 2 }', 'y = m x + c', 'a + b']
  same = im.image_metrics(refs, list(refs), workers=1)
  assert same['image_exact_match'] == 1.0
  assert same['image_exact_match_ws'] == 1.0
  assert same['image_edit_accuracy'] == 1.0
  # Different tokens, identical rendering: {a}+b vs a+b.
  assert im.image_metrics(['a + b'], ['{ a } + { b }'],
                          workers=1)['image_exact_match'] == 1.0
  diff = im.image_metrics(refs, ['\\sqrt { z } - \\Omega', None,
                                 '\\undefinedmacro'], workers=1)
  assert diff['image_exact_match'] == 0.0
  assert diff['image_edit_accuracy'] < 0.5
  assert diff['image_num_evaluated'] == 3


def test_missing_tex_names_packages(monkeypatch):
  monkeypatch.setattr(shutil, 'which', lambda name: None)
  with pytest.raises(RuntimeError, match='texlive-latex-base'):
    render.check_tex()


@pytest.mark.tex
@tex
def test_timeout_blames_the_looping_formula():
  results = render.render_formulas(['a + b', '\\def\\a{\\a}\\a', 'x ^ { 2 }'],
                                   workers=1, timeout_s=3)
  assert [r.image is not None for r in results] == [True, False, True]
  assert results[1].error.startswith('timeout')
