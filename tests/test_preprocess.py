"""Tests for im2latex_jax.infer.preprocess: user images -> dataset-like inputs.

Fixtures are six processed im2latex-100k train images (tests/fixtures/images).
Each is disguised as a user image (off-centre on a large canvas, rescaled,
inverted, a coloured RGB screenshot with a frame) and must come back to within
a few pixels of the original ink box, on the original bucket.
"""

import pathlib

import numpy as np
from PIL import Image
import pytest

from im2latex_jax.infer import image_io
from im2latex_jax.infer import preprocess
from im2latex_jax.data import buckets as buckets_lib
from im2latex_jax.data import processing

FIXTURES = sorted(
    (pathlib.Path(__file__).parent / 'fixtures' / 'images').glob('*.png'))


def _ink_box(a):
  ys, xs = np.nonzero(np.asarray(a) < preprocess.INK_THRESHOLD)
  return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])


def _crop(a):
  t, l, b, r = _ink_box(a)
  return a[t:b, l:r]


def _shifted(a):
  c = _crop(a)
  out = np.full((c.shape[0] * 3 + 60, c.shape[1] * 2 + 80), 255, np.uint8)
  out[37:37 + c.shape[0], 61:61 + c.shape[1]] = c
  return out


def _scaled(a, s):
  im = Image.fromarray(a)
  size = (round(a.shape[1] * s), round(a.shape[0] * s))
  return np.asarray(im.resize(size, Image.LANCZOS))


def _screenshot(a):
  f = a.astype(np.float32)[..., None] / 255.0
  bg = np.array([250, 240, 200], np.float32)
  ink = np.array([20, 30, 120], np.float32)
  rgb = np.pad(ink + (bg - ink) * f, ((20, 30), (15, 25), (0, 0)), mode='edge')
  rgb[:20], rgb[-30:], rgb[:, :15], rgb[:, -25:] = bg, bg, bg, bg
  # A uniform grey window frame around the screenshot.
  rgb = np.pad(rgb, ((3, 3), (3, 3), (0, 0)), constant_values=128)
  return Image.fromarray(np.round(rgb).astype(np.uint8), 'RGB')


TRANSFORMS = {
    'identity': lambda a: a,
    'shifted': _shifted,
    'inverted': lambda a: 255 - a,
    'screenshot_rgb': _screenshot,
    'upscaled_2x': lambda a: _scaled(a, 2.0),
    'downscaled_0.5x': lambda a: _scaled(a, 0.5),
}
# Max error (px) of any side of the ink box. Rescaled inputs are only as
# good as the scale estimate (stroke width for 2x: ~1 % spread). 0.5x is
# recognized as exactly half scale (solid-ink share), so only resampling's
# 1 px rounding remains.
TOLERANCE = {'upscaled_2x': (3, 0.03), 'downscaled_0.5x': (3, 0.0)}


def test_fixtures_present():
  assert len(FIXTURES) >= 5


@pytest.mark.parametrize('name', list(TRANSFORMS))
@pytest.mark.parametrize('path', FIXTURES, ids=lambda p: p.name)
def test_round_trip(path, name):
  a = np.asarray(Image.open(path))
  out = preprocess.normalize_image(TRANSFORMS[name](a))
  assert out.dtype == np.uint8 and out.shape == a.shape
  abs_tol, rel_tol = TOLERANCE.get(name, (2, 0.0))
  err = np.abs(_ink_box(out) - _ink_box(a)).max()
  assert err <= abs_tol + rel_tol * a.shape[1], (name, _ink_box(out),
                                                 _ink_box(a))
  np.testing.assert_array_equal(_ink_box(out)[:2], [preprocess.MARGIN] * 2)


def test_dataset_image_is_a_fixed_point():
  a = np.asarray(Image.open(FIXTURES[0]))
  out = preprocess.normalize_image(a)
  assert np.abs(out.astype(int) - a.astype(int)).mean() < 2.0


def _formula_rgb():
  return np.stack([np.asarray(Image.open(FIXTURES[0]))] * 3, -1)


@pytest.mark.parametrize('mode', ['1', 'L', 'LA', 'P', 'RGB', 'RGBA', 'CMYK',
                                  'YCbCr', 'HSV', 'I;16', 'I'])
def test_pil_modes(mode):
  ref = preprocess.normalize_image(Image.fromarray(_formula_rgb()))
  im = Image.fromarray(_formula_rgb())
  if mode in ('I;16', 'I'):
    im = Image.fromarray(np.asarray(im.convert('L')).astype(np.uint16) * 257)
    im = im.convert(mode) if mode == 'I' else im
  else:
    im = im.convert(mode)
  out = preprocess.normalize_image(im)
  assert out.shape == ref.shape
  assert np.abs(_ink_box(out) - _ink_box(ref)).max() <= 2


def test_transparent_png_composited_on_white():
  # Black ink drawn only through alpha, as many web renderers export it.
  gray = np.asarray(Image.open(FIXTURES[0]))
  rgba = np.zeros(gray.shape + (4,), np.uint8)
  rgba[..., 3] = 255 - gray
  out = preprocess.normalize_image(rgba)
  assert out.shape == gray.shape
  assert np.abs(_ink_box(out) - _ink_box(gray)).max() <= 2


def test_arrays_uint16_and_float():
  gray = np.asarray(Image.open(FIXTURES[0]))
  ref = preprocess.normalize_image(gray)
  for a in (gray.astype(np.uint16) * 257, gray.astype(np.float32) / 255):
    np.testing.assert_allclose(preprocess.normalize_image(a), ref, atol=1)


@pytest.mark.parametrize('image,match', [
    (np.zeros((0, 0), np.uint8), 'empty'),
    (np.full((100, 300), 255, np.uint8), 'blank'),
    (np.full((100, 300), 17, np.uint8), 'blank'),
    (np.zeros((2, 50), np.uint8), 'too small'),
    (np.zeros((5, 5, 7), np.uint8), 'shape'),
])
def test_errors(image, match):
  with pytest.raises(preprocess.ImageError, match=match):
    preprocess.normalize_image(image)


def test_too_large_goes_on_an_overflow_canvas():
  a = np.asarray(Image.open(FIXTURES[0]))
  crop = _crop(a)
  tiled = np.tile(crop, (1, 8))  # ~8 formulas side by side: > 800 px
  with pytest.raises(preprocess.ImageError, match='larger than the largest'):
    preprocess.normalize_image(tiled, overflow=False)
  out = preprocess.normalize_image(tiled)
  assert out.shape[0] in preprocess.OVERFLOW_HEIGHTS
  assert out.shape[1] in preprocess.OVERFLOW_WIDTHS
  box = _ink_box(out)
  assert (box[0], box[1]) == (preprocess.MARGIN, preprocess.MARGIN)
  # Larger than the largest overflow canvas by less than 1/0.6: shrunk to fit.
  wide = np.tile(crop, (1, int(np.ceil(3400 / crop.shape[1]))))
  out = preprocess.normalize_image(wide)
  assert out.shape[1] == preprocess.OVERFLOW_WIDTHS[-1]
  # Far larger: refused, saying what to do.
  with pytest.raises(preprocess.ImageError, match='crop the image'):
    preprocess.normalize_image(np.tile(crop, (1, int(np.ceil(6000 / crop.shape[1])))))


def test_one_mode_policy_for_library_and_uploads():
  """preprocess takes PIL images through image_io's policy: a 32-bit float
  image is refused in both (the upload as 415), with the same words."""
  with pytest.raises(preprocess.ImageError, match='unsupported image mode F'):
    preprocess.normalize_image(Image.new('F', (50, 50)))
  with pytest.raises(image_io.UploadError, match='unsupported image mode F') as e:
    image_io.to_array(Image.new('F', (50, 50)))
  assert e.value.status == 415


def test_target_glyph_height_scales_output():
  a = np.asarray(Image.open(FIXTURES[0]))
  big = preprocess.normalize_image(
      a, target_glyph_height=2 * preprocess.DATASET_GLYPH_HEIGHT)
  box, box2 = _ink_box(a), _ink_box(big)
  w, w2 = box[3] - box[1], box2[3] - box2[1]
  assert abs(w2 - 2 * w) <= 4


def test_one_bucket_rule_two_orders():
  """first_fit on the area-sorted grid (training, inference) and on
  im2markup's own order (dataset processing) differ where im2markup's list is
  not sorted by area: a 200x800 (H x W) page goes to 200x1000 by area
  (200,000 px), to 320x800 (256,000 px) in im2markup's order."""
  grid = preprocess.DEFAULT_BUCKETS
  assert grid == buckets_lib.IM2MARKUP_BUCKETS
  assert buckets_lib.first_fit(30, 100, grid) == (50, 120)   # 6,000 px
  assert buckets_lib.first_fit(30, 130, grid) == (40, 160)   # 6,400 px
  assert buckets_lib.first_fit(100, 400, grid) == (100, 500)
  assert buckets_lib.first_fit(900, 10, grid) is None
  assert buckets_lib.first_fit(200 // 2, 800 // 2, grid) == (100, 500)
  assert processing.smallest_bucket_wh(800, 200) == (800, 320)
  assert processing.smallest_bucket_wh(410, 100) == (480, 100)


def test_solid_ink_fraction_separates_half_scale():
  for path in FIXTURES:
    a = np.asarray(Image.open(path))
    assert (preprocess.solid_ink_fraction(a) >
            preprocess.HALF_SCALE_SOLID_FRACTION)
    assert (preprocess.solid_ink_fraction(_scaled(a, 0.5)) <
            preprocess.HALF_SCALE_SOLID_FRACTION)


def _trim_reference(g, tol=8.0):
  """The row-by-row loop `_trim_uniform_border` replaced (same rule)."""
  top, bottom, left, right = 0, g.shape[0], 0, g.shape[1]
  flat = lambda v: v.size == 0 or float(v.max() - v.min()) <= tol
  while bottom - top > 1 and flat(g[top, left:right]):
    top += 1
  while bottom - top > 1 and flat(g[bottom - 1, left:right]):
    bottom -= 1
  while right - left > 1 and flat(g[top:bottom, left]):
    left += 1
  while right - left > 1 and flat(g[top:bottom, right - 1]):
    right -= 1
  return g[top:bottom, left:right]


def test_vectorized_border_trim_equals_the_loop():
  rng = np.random.default_rng(0)
  cases = [np.full((7, 9), 255.0), np.zeros((1, 5)), np.full((4, 1), 3.0)]
  for _ in range(200):
    h, w = rng.integers(1, 30, 2)
    g = np.full((h, w), 255.0, np.float32)
    # frames of random widths and colours around random content
    t, b, l, r = rng.integers(0, 5, 4)
    g[t:max(t, h - b), l:max(l, w - r)] = rng.integers(0, 256, (max(0, h - b - t), max(0, w - r - l)))
    g[:t], g[h - b:] = rng.integers(0, 256), rng.integers(0, 256)
    g[:, :l], g[:, w - r:] = rng.integers(0, 256), rng.integers(0, 256)
    cases.append(g)
  for g in cases:
    np.testing.assert_array_equal(preprocess._trim_uniform_border(g), _trim_reference(g))


def test_place_refuses_before_resizing(monkeypatch):
  """A crop far too large at its scale is refused without being resized."""
  def no_resize(g, scale):
    raise AssertionError(f'resized {g.shape} by {scale}')

  monkeypatch.setattr(preprocess, '_resize', no_resize)
  ink = np.zeros((100, 100), np.float32)
  with pytest.raises(preprocess.ImageError, match=r'10000x10000 px at the training scale'):
    preprocess.place(ink, 100.0)
  with pytest.raises(preprocess.ImageError, match='larger than the largest bucket'):
    preprocess.place(ink, 20.0, overflow=False)


def test_large_input_is_reduced_first_and_scales_stay_the_inputs():
  """An input above MAX_WORK_PIXELS is box-averaged by an integer factor;
  a 2x nearest-neighbour copy of an image reads exactly as the image."""
  small = np.full((1250, 1250), 255, np.uint8)
  crop = _crop(np.asarray(Image.open(FIXTURES[0])))
  small[300:300 + crop.shape[0], 400:400 + crop.shape[1]] = crop
  big = np.kron(small, np.ones((2, 2), np.uint8))  # 2500 x 2500 = 6.25 MP
  assert big.size > preprocess.MAX_WORK_PIXELS >= small.size
  c = preprocess.crop_formula(big)
  assert c.reduction == 2
  np.testing.assert_array_equal(c.ink, preprocess.crop_formula(small).ink)
  out_big, s_big = preprocess.normalize(big, scale=0.5)
  out_small, s_small = preprocess.normalize(small, scale=1.0)
  np.testing.assert_array_equal(out_big, out_small)
  assert (s_big, s_small) == (0.5, 1.0)
  # A strip thinner than the factor is averaged along its length only.
  g, k = preprocess._reduce(np.full((1, 9_000_000), 255, np.float32))
  assert k == 3 and g.shape == (1, 3_000_000)


def test_large_rgb_fast_path_matches_the_general_one():
  """A large uint8 RGB image takes Pillow's C path; a float copy of it takes
  NumPy's: the same crop, grey levels within rounding of each other."""
  page = np.full((2100, 2100, 3), 255, np.uint8)
  crop = _crop(np.asarray(Image.open(FIXTURES[0])))
  ink = np.kron(crop, np.ones((3, 3), np.uint8))
  page[900:900 + ink.shape[0], 300:300 + ink.shape[1]] = (ink[..., None] * [[[1.0, 0.8, 0.6]]]
                                                          ).astype(np.uint8)
  fast = preprocess.crop_formula(page)
  general = preprocess.crop_formula(page.astype(np.float32) / 255)
  assert fast.reduction == general.reduction == 2
  assert fast.ink.shape == general.ink.shape
  diff = np.abs(fast.ink - general.ink)
  # Equal but for rounding, and a pixel pushed across the 235 background
  # cut-off (255 on one path, ~234 on the other).
  assert (diff > 2).sum() <= 5 and np.all((diff <= 2) | (np.maximum(fast.ink, general.ink) == 255))
  np.testing.assert_array_equal(fast.ink < preprocess.INK_THRESHOLD,
                                general.ink < preprocess.INK_THRESHOLD)
  assert preprocess.crop_formula(Image.fromarray(page)).ink.shape == fast.ink.shape


def test_noise_is_not_a_formula():
  noise = np.random.default_rng(0).integers(0, 256, (1500, 1500), dtype=np.uint8)
  with pytest.raises(preprocess.ImageError, match='does not look like a formula'):
    preprocess.crop_formula(noise)


def test_canvas_ladder_holds_the_buckets_and_steps_by_at_most_its_factor():
  buckets = [(50, 200), (50, 280), (50, 400), (100, 500), (160, 500)]
  ladder = preprocess.canvas_ladder(buckets, step=1.25)
  assert set(buckets) <= set(ladder)
  areas = [h * w for h, w in ladder]
  assert areas == sorted(areas)  # first_fit picks the smallest that holds
  hs, ws = sorted({h for h, _ in ladder}), sorted({w for _, w in ladder})
  assert (hs[0], hs[-1], ws[0], ws[-1]) == (50, 160, 100, 500)
  assert all(b / a <= 1.25 + 1e-3 for a, b in zip(hs, hs[1:]))
  assert all(b / a <= 1.25 + 1e-3 for a, b in zip(ws, ws[1:]))
  # 100 -> 200 takes four steps of 2 ** (1 / 4): 119, 141, 168.
  assert ws[:5] == [100, 119, 141, 168, 200]
  with pytest.raises(ValueError, match='step'):
    preprocess.canvas_ladder(buckets, step=1.0)


def test_place_on_the_ladder_is_the_buckets_top_left_corner():
  """A formula on its fine canvas is the same pixels as on its training
  bucket, less the white padding to the bottom and right."""
  buckets = ((50, 200), (50, 280), (50, 400), (100, 500), (160, 500))
  ladder = preprocess.canvas_ladder(buckets)
  rng = np.random.default_rng(0)
  smaller = 0
  for h, w in ((12, 30), (30, 150), (45, 300), (80, 420), (140, 480)):
    ink = np.full((h, w), 255, np.uint8)
    ink[rng.integers(0, h, 40), rng.integers(0, w, 40)] = 0
    ink[0, 0] = ink[-1, -1] = 0  # the crop's box is the whole array
    coarse = preprocess.place(ink, 1.0, buckets)
    fine = preprocess.place(ink, 1.0, ladder)
    fh, fw = fine.shape
    assert fh >= h + 2 * preprocess.MARGIN and fw >= w + 2 * preprocess.MARGIN
    np.testing.assert_array_equal(fine, coarse[:fh, :fw])
    assert (coarse[fh:] == 255).all() and (coarse[:, fw:] == 255).all()
    smaller += fine.size < coarse.size
  assert smaller == 3  # the last two need their bucket's full width (no canvas between)
