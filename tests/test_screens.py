"""Screenshot renderers (pdflatex fonts, KaTeX, MathJax), presentation, the
`render-screens` CLI and the screenshot benchmark (`robustness`)."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from im2latex_jax.infer import preprocess
from im2latex_jax.evaluation import robustness
from im2latex_jax.data import layout
from im2latex_jax.datagen import engines
from im2latex_jax.datagen import presentation
from im2latex_jax.datagen import screens
from im2latex_jax.serve import fake


def _available(engine):
  try:
    engines.check_engine(engine)
    return True
  except RuntimeError:
    return False


AVAILABLE = [e for e in engines.ENGINES if _available(e)]
needs_engine = pytest.mark.parametrize(
    'engine', [pytest.param(e, marks=pytest.mark.skipif(
        e not in AVAILABLE, reason=f'{e} renderer not installed (scripts/setup.sh)'))
               for e in engines.ENGINES])


def _spec(engine, **kw):
  # 10 pt at 144 dpi is an em of 19.93 px; the web engines get 20 px.
  base = {'style': 'display', 'font': 'cm', 'pt': 10, 'dpi': 144}
  if engine != 'pdflatex':
    base['em_px'] = 20.0
  base.update(kw)
  return base


@pytest.mark.slow
@needs_engine
def test_engine_draws_a_one_em_square_and_skips_bad_formulas(engine):
  # \rule{1em}{1em} is a square one em on a side in every engine, so its ink
  # box is known exactly; a broken formula is reported, never raised.
  formulas = ['\\rule { 1 e m } { 1 e m }', '\\frac { a', 'x + y']
  got = engines.render(engine, formulas, [_spec(engine)] * 3, workers=1)
  em = got[0].em_px
  assert em == pytest.approx(20.0 if engine != 'pdflatex' else 10 / 72.27 * 144)
  square = got[0].image
  assert square is not None, got[0].error
  assert abs(square.shape[0] - em) <= 1.5 and abs(square.shape[1] - em) <= 1.5, square.shape
  assert square[2:-2, 2:-2].max() < 40  # solid ink inside
  assert got[1].image is None and got[1].error
  xy = got[2].image
  assert xy is not None and xy.min() < 64
  # Three glyphs side by side, each under an em high.
  assert xy.shape[0] < em and xy.shape[1] > 1.5 * em


@pytest.mark.slow
@pytest.mark.skipif('pdflatex' not in AVAILABLE, reason='needs pdflatex')
def test_pdflatex_fonts_and_inline_style_differ():
  f = ['\\sum _ { i = 1 } ^ { n } \\frac { a _ { i } } { b }']
  imgs = {font: engines.render('pdflatex', f, [_spec('pdflatex', font=font)])[0].image
          for font in engines.FONTS}
  assert all(im is not None for im in imgs.values()), imgs
  shapes = {font: im.shape for font, im in imgs.items()}
  assert len(set(shapes.values())) >= 4, shapes  # different glyph metrics
  inline = engines.render('pdflatex', f, [_spec('pdflatex', style='inline')])[0].image
  # Inline: limits beside the sum, a smaller fraction: a lower image.
  assert inline.shape[0] < imgs['cm'].shape[0]


def test_presentation_composes_colours_and_margins():
  glyphs = np.full((4, 6), 255, np.uint8)
  glyphs[1:3, 2:4] = 0
  p = presentation.Presentation(margins=(1, 2, 3, 4), background=(10, 20, 30),
                                ink=(200, 100, 50))
  rgb = presentation.apply(glyphs, p)
  assert rgb.shape == (4 + 1 + 3, 6 + 2 + 4, 3)
  assert tuple(rgb[0, 0]) == (10, 20, 30)
  assert tuple(rgb[1 + 1, 4 + 2]) == (200, 100, 50)
  # Round trip through the params file.
  assert presentation.Presentation.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_true_scale_normalizes_to_the_dataset_em():
  # A one-em square drawn at 3 different ems, normalized with its recorded
  # true scale, is DATASET_EM_PX (13.84 px) high every time. Dots an em above,
  # beside and below it keep the crop's edges mostly paper, as a formula's
  # are (border trimming strips uniform edge rows, a mostly dark edge reads
  # as a dark background).
  for em in (14, 27, 41):
    g = np.full((3 * em + 20, 6 * em), 255, np.uint8)
    top = 10 + em
    g[top:top + em, 10:10 + em] = 0
    for y, x in ((10, 3 * em), (top + em // 2, 4 * em), (top + 2 * em - 3, 5 * em)):
      g[y:y + 3, x:x + 3] = 0
    out = screens.to_dataset(np.stack([g] * 3, -1), float(em))
    ys, xs = np.nonzero(out < 128)
    assert (ys.min(), xs.min()) == (preprocess.MARGIN, preprocess.MARGIN)
    first = np.nonzero(out[:, xs.min() + 1] < 128)[0]
    side = first.max() - first.min() + 1
    assert abs(side - preprocess.DATASET_EM_PX) <= 1.0, (em, side)


def test_spec_sampling_is_seeded_per_image():
  a = screens.sample_spec('katex', screens.image_rng(0, 'katex', 7))
  b = screens.sample_spec('katex', screens.image_rng(0, 'katex', 7))
  c = screens.sample_spec('katex', screens.image_rng(1, 'katex', 7))
  assert a == b and a != c
  p = screens.sample_spec('pdflatex', screens.image_rng(0, 'pdflatex', 3))
  assert p['font'] in engines.FONTS and p['em_px'] == pytest.approx(
      p['pt'] / 72.27 * p['dpi'])
  drawn = {screens.sample_spec('pdflatex', screens.image_rng(0, 'pdflatex', i),
                                ['euler', 'pxfonts'])['font'] for i in range(40)}
  assert drawn == {'euler', 'pxfonts'}
  assert screens.parse_fonts('euler, pxfonts', 'pdflatex') == ['euler', 'pxfonts']
  assert screens.parse_fonts(None, 'katex') is None
  with pytest.raises(ValueError, match="'euler,comic': comic is not one of cm,euler"):
    screens.parse_fonts('euler,comic', 'pdflatex')
  with pytest.raises(ValueError, match='--engine katex has its own'):
    screens.parse_fonts('euler', 'katex')
  assert layout.parse_list_arg('a/b.lst:0:7475') == ('a/b.lst', 0, 7475)
  assert layout.parse_list_arg('a/b.lst') == ('a/b.lst', None, None)


@pytest.mark.slow
@pytest.mark.skipif('mathjax' not in AVAILABLE, reason='needs node mathjax-full')
@pytest.mark.parametrize('mode', ['dataset', 'screenshot'])
def test_render_screens_cli_writes_a_dataset_the_builder_reads(tmp_path, capsys, mode):
  src = tmp_path / 'src'
  formulas = ['a + b', '\\frac { a', 'x ^ { 2 }', 'not listed']
  src.mkdir()
  (src / 'f.lst').write_text('\n'.join(formulas) + '\n')
  (src / 'train.lst').write_text('i0 0\ni1 1\ni2 2\n')
  out = tmp_path / 'out'
  rc = screens.main(['im2latex-jax render-screens', '--engine', 'mathjax',
                     '--formulas', str(src / 'f.lst'),
                     '--split-list', f'{src / "train.lst"}:0:3', '--out', str(out),
                     '--as', mode, '--workers', '1'])
  assert rc == 0
  assert layout.check_data_dir(str(out)) == ['train']
  pairs = layout.read_split_list(str(out / layout.SPLIT_FILES['train']), 4)
  assert [i for _, i in pairs] == [0, 2]  # the broken formula is skipped
  fails = (out / layout.FAILURES_FILE).read_text().splitlines()
  assert len(fails) == 1 and fails[0].startswith('1\t')
  assert 'formula 1 skipped' in capsys.readouterr().err
  params = layout.read_params(str(out))
  assert sorted(params) == [n for n, _ in pairs]
  for name, rec in params.items():
    assert rec['true_scale'] == pytest.approx(preprocess.DATASET_EM_PX / rec['em_px'])
    with Image.open(out / layout.IMAGES_DIR / name) as im:
      if mode == 'dataset':
        assert im.mode == 'L' and im.size[::-1] in preprocess.DEFAULT_BUCKETS
      else:
        assert im.mode == 'RGB'


@pytest.mark.slow
@pytest.mark.skipif(not {'pdflatex', 'mathjax'} <= set(AVAILABLE),
                    reason='needs pdflatex and mathjax')
def test_benchmark_grid_is_deterministic():
  formulas = ['a + b', 'x ^ { 2 } + \\frac { 1 } { y }']
  for name in ('mathjax-20px-jpeg', 'pdf-cm-10pt-96dpi'):
    cond = robustness.CONDITIONS_BY_NAME[name]
    a = robustness.draw_condition(cond, formulas, [0, 1], seed=0, workers=1)
    b = robustness.draw_condition(cond, formulas, [0, 1], seed=0, workers=1)
    c = robustness.draw_condition(cond, formulas, [0, 1], seed=1, workers=1)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x.image, y.image)
      assert x.params == y.params
    assert any(x.params['presentation'] != z.params['presentation'] for x, z in zip(a, c))


def test_condition_grid_covers_the_issue():
  names = [c.name for c in robustness.CONDITIONS]
  assert len(names) == len(set(names))
  engines_used = {c.engine for c in robustness.CONDITIONS}
  assert engines_used == {'dataset', *engines.ENGINES}
  fonts = {c.spec_dict().get('font') for c in robustness.CONDITIONS if c.engine == 'pdflatex'}
  assert fonts == set(engines.FONTS)
  looks = {c.look for c in robustness.CONDITIONS}
  assert {'dark', 'grey', 'colour', 'jpeg', 'blur', 'reshot'} <= looks


@pytest.mark.slow
@pytest.mark.skipif('pdflatex' not in AVAILABLE, reason='needs pdflatex')
def test_benchmark_cli_scores_with_hand_computed_figures(tmp_path):
  # Data: 3 formulas in the validation split; the fake predictor reads every
  # image as `\frac { a } { b }`, so exact match is 1/3 wherever an image is
  # read, and a blank dataset image is refused (counted as empty).
  formulas = ['\\frac { a } { b }', 'x + y', 'z']
  data = tmp_path / 'data'
  # Ink the real crop reads (the fake predictor prepares with it): text.
  text = Image.new('L', (120, 40), 255)
  ImageDraw.Draw(text).text((10, 12), 'x + y = 2', fill=0)
  ok = np.asarray(text)
  blank = np.full((40, 120), 255, np.uint8)
  layout.write_dataset(str(data), formulas, 'validation',
                       [(0, 'a.png', ok), (1, 'b.png', blank), (2, 'c.png', ok)])
  out = tmp_path / 'out'
  argv = ['im2latex-jax robustness', '--data', str(data), '--start', '0', '--n', '3',
          '--out', str(out), '--conditions', 'clean,pdf-cm-10pt-96dpi']
  assert robustness.main(argv, predictor=fake.FakePredictor()) == 0
  res = json.loads((out / 'results.json').read_text())
  clean, pdf = res['conditions']
  assert clean['condition'] == 'clean' and clean['images'] == 3
  assert clean['refused'] == 1
  assert clean['exact_match'] == pytest.approx(100 / 3)
  assert pdf['images'] == 3 and pdf['refused'] == 0
  assert pdf['exact_match'] == pytest.approx(100 / 3)
  table = (out / 'table.md').read_text()
  assert '| clean | 3 |' in table and '| pdf-cm-10pt-96dpi | 3 |' in table
  preds = (out / 'predictions' / 'clean.tsv').read_text().splitlines()
  assert preds[1].split('\t')[1] == 'refused'
  # A rerun reuses the drawn images (same settings) and gives the same table.
  saved = sorted((out / 'images' / 'pdf-cm-10pt-96dpi').rglob('*.png'))
  mtimes = [p.stat().st_mtime_ns for p in saved]
  assert robustness.main(argv, predictor=fake.FakePredictor()) == 0
  assert [p.stat().st_mtime_ns for p in saved] == mtimes
  assert (out / 'table.md').read_text() == table


def test_benchmark_rejects_unknown_condition(tmp_path, capsys):
  layout.write_dataset(str(tmp_path / 'd'), ['a'], 'validation',
                       [(0, 'a.png', np.zeros((8, 8), np.uint8))])
  rc = robustness.main(['im2latex-jax robustness', '--data', str(tmp_path / 'd'),
                        '--out', str(tmp_path / 'o'), '--conditions', 'katex-99px'],
                       predictor=fake.FakePredictor())
  assert rc == 2
  assert 'katex-99px' in capsys.readouterr().err


def test_layout_split_names():
  assert layout.split_file('validation') == 'im2latex_validate_filter.lst'
  assert layout.split_file('validate') == 'im2latex_validate_filter.lst'
  with pytest.raises(ValueError, match='unknown split'):
    layout.split_file('valid')

