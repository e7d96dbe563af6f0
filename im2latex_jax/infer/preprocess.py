"""Inference preprocessing: any user image -> an image that looks like the data.

The model was trained on im2latex-100k's processed images: 8-bit grayscale,
black formula on white, cropped to the ink, a margin of 4 px (8 px before
im2markup's x2 downsampling) at the top-left, placed on the first of
im2markup's buckets that holds it, glyphs at one fixed size. A screenshot, a
photo crop or a render at another resolution differs in all of these;
`normalize_image` undoes the differences so predict and the web server feed
the model what it has seen:

  to grayscale -> trim a uniform frame -> invert a dark background ->
  stretch contrast (background 255, ink 0) -> crop to the ink ->
  rescale glyphs to the dataset's size -> place on a bucket like the data.

Usage:
  gray = normalize_image(PIL.Image.open(path))   # uint8 [H, W] on a bucket
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from im2latex_jax.data import buckets as buckets_lib
from im2latex_jax.infer import image_io

# The training grid of the shipped configs (data/buckets.py, by area).
DEFAULT_BUCKETS = buckets_lib.IM2MARKUP_BUCKETS

# Margin around the ink in px. Measured on 1,000 processed dataset images: the
# bounding box of pixels < INK_THRESHOLD starts at (4, 4) in every one, and
# "box + 4 px on every side fits" reproduces the bucket of 100 % of them.
MARGIN = 4
# A pixel darker than this (on the 0..255 scale, white background) is ink.
INK_THRESHOLD = 200

# Glyph scale is measured two ways, because neither works over the whole range:
#
# * Stroke width, 2 x ink mass / ink perimeter (mass = sum of darkness, the
#   perimeter from the image's total variation, so both are sub-pixel and
#   blur-tolerant). Every dataset formula is set in the same font at the same
#   size, so this barely varies: on 380 processed im2latex-100k images (every
#   29th) median 1.49 px, 5-95 % 1.41-1.58 px (cv 3.6 %), and it follows an
#   upscaling exactly (2x: ratio cv 1 %). Below the dataset's scale it
#   saturates at ~1.5 px (strokes are then one anti-aliased pixel) and says
#   nothing.
# * Glyph height, the median height of character-like connected components:
#   works at any scale but varies with the formula's content (x-height letters,
#   capitals, scripts): on 1,044 images (every 11th) median 10 px, quartiles
#   9.5 / 10.5, 5-95 % 7-13 px.
#
# So: stroke width decides whether (and how much) to shrink an image. Below
# the dataset's scale, glyph height and vertical ink run give a (noisy)
# continuous estimate, and the share of solid ink recognizes half scale
# exactly (see `_rescale_factor`).
DATASET_STROKE_WIDTH = 1.49
DATASET_GLYPH_HEIGHT = 10.0
# (scale, median stroke width) of the same 380 images after a LANCZOS resize
# by `scale`: resampling blurs by ~0.3 px, so the curve is not quite linear.
STROKE_WIDTH_CURVE = ((1.0, 1.49), (1.2, 1.88), (1.5, 2.29), (2.0, 3.02),
                      (3.0, 4.40))
# Stroke widths up to this ratio to the dataset's are the dataset's scale: its
# 95 % point is 1.06x the median, and images *smaller* than the dataset's
# scale measure up to 1.2x (resampling blur).
STROKE_DEAD_BAND = 1.2

# Below the dataset's scale (stroke width saturated): log-linear calibration
# of mean vertical ink run and glyph height against log scale (see
# `_log_scale_below`); values at 1x are log-means over the calibration set.
DATASET_VERTICAL_RUN = 2.35
VERTICAL_RUN_SLOPE = 0.50
DATASET_GLYPH_HEIGHT_LOGMEAN = 9.77
GLYPH_HEIGHT_SLOPE = 0.77
# Below this log-scale estimate (~0.35x) the continuous estimate is used.
COARSE_LOG_SCALE = -1.05
# Half scale is recognized by the solid-ink share (see `solid_ink_fraction`):
# in-pipeline on 3 x 202 dataset images (every 57th, offsets 0-2) 1x gives
# mean 0.38, sd 0.04, min 0.29; a 0.5x LANCZOS downscale mean 0.09, sd 0.045,
# 99 % point 0.23. The log-scale estimate must also lean below 1x (costs ~1 %
# of 0.5x images) so a blurred or JPEG'd 1x image is not taken for 0.5x.
HALF_SCALE_SOLID_FRACTION = 0.25
HALF_SCALE_MAX_LOG = -0.1

# The em (font size) in px of the dataset's images: 10 pt at 200 dpi, halved
# by im2markup's processing (10 / 72.27 * 200 / 2). A render whose em is E px
# is at the dataset's scale after a rescale by DATASET_EM_PX / E.
DATASET_EM_PX = 10 / 72.27 * 200 / 2

# Canvases for formulas larger than every training bucket, (H, W) rounded up
# on these ladders so that only a few more programs compile. 800 px of height
# is 100 feature rows, as many as im2markup's row encoder has initial states.
OVERFLOW_HEIGHTS = (50, 100, 160, 240, 320, 480, 640, 800)
OVERFLOW_WIDTHS = (500, 750, 1000, 1500, 2000, 3000)
# A formula larger than the largest overflow canvas is shrunk to fit it, but
# not by more than this (glyphs would become unreadable).
MIN_OVERFLOW_SHRINK = 0.6
# A crop's rescaled ink box can shrink (the resize greys out thin edges that
# then count as background), never grow: `place` refuses before resizing only
# what is more than this factor too large even so.
RESCALED_INK_SLACK = 1.5

# Inputs smaller than this on a side carry no readable formula.
MIN_SIDE = 4
# Below this estimated glyph height (px) the input is too coarse to read.
MIN_GLYPH_HEIGHT = 4.0
# (image_io.MAX_WORK_PIXELS: an input above it is box-averaged first.)
MAX_WORK_PIXELS = image_io.MAX_WORK_PIXELS
# More connected ink marks than this is noise, a photo or a page of text, not
# one formula (the screenshot benchmark's images have at most ~65; a
# 150-token formula a few hundred).
MAX_MARKS = 5000


class ImageError(ValueError):
  """The image cannot be turned into a model input; the message says why."""


def to_grayscale(image: np.ndarray | Image.Image) -> np.ndarray:
  """Returns a float32 [H, W] image in [0, 255]; transparency over white.

  Args:
    image: a PIL image of a mode image_io.to_array accepts (1, L, LA, P, PA,
      RGB, RGBA, CMYK, YCbCr, LAB, HSV, I, I;16*); or an array [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] of
      uint8, uint16, bool, or floats in [0, 1].
  """
  if isinstance(image, Image.Image):
    return _pil_to_gray(image)
  return _array_to_gray(np.asarray(image))


def _pil_to_gray(im: Image.Image) -> np.ndarray:
  # One mode policy for every way in (CLI, API, page, library): image_io's.
  try:
    return _array_to_gray(image_io.to_array(im))
  except image_io.UploadError as e:
    raise ImageError(str(e)) from None


def _array_to_gray(a: np.ndarray) -> np.ndarray:
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)):
    raise ImageError(f'image array of shape {a.shape} is not an image; pass '
                     '[H, W], [H, W, 1], [H, W, 3] (RGB) or [H, W, 4] (RGBA)')
  if a.dtype == bool:
    a = a.astype(np.float32) * 255
  elif a.dtype == np.uint16:
    a = a.astype(np.float32) / 257.0
  elif np.issubdtype(a.dtype, np.floating):
    a = a.astype(np.float32)
    if a.size and np.nanmax(a) <= 1.0:
      a = a * 255
  elif a.dtype == np.uint8:  # in range and never NaN: no clip needed
    return _gray_from_unit_range(a.astype(np.float32))
  elif np.issubdtype(a.dtype, np.integer):
    a = a.astype(np.float32)
  else:
    raise ImageError(f'image dtype {a.dtype} is not supported; pass uint8, '
                     'uint16, bool or float in [0, 1]')
  return _gray_from_unit_range(np.clip(np.nan_to_num(a, nan=255.0), 0, 255))


def _gray_from_unit_range(a: np.ndarray) -> np.ndarray:
  """float32 [H, W] of float32 [H, W] / [H, W, C] values already in [0, 255]."""
  if a.ndim == 2:
    return a
  if a.shape[-1] in (2, 4):
    # LA / RGBA: composite on white, as a browser shows a transparent PNG.
    alpha = a[..., -1:] / 255.0
    a = a[..., :-1] * alpha + 255.0 * (1.0 - alpha)
  if a.shape[-1] == 1:
    return a[..., 0]
  # ITU-R 601 luma, the weights PIL's convert('L') uses.
  return a @ np.array([0.299, 0.587, 0.114], np.float32)


def _trim_uniform_border(g: np.ndarray, tol: float = 8.0) -> np.ndarray:
  """Strips outer rows/columns that are each of one colour (frames, bars).

  Rows first (over all columns), then columns (over the rows kept); at least
  one row and one column stay. Vectorized: one pass over the pixels, whatever
  the image's shape (a 4 x 6,250,000 strip costs what any 25 MP image does).
  """
  def span(flat: np.ndarray) -> tuple[int, int]:
    keep = np.flatnonzero(~flat)
    if keep.size == 0:  # every line uniform: keep the last one
      return flat.size - 1, flat.size
    return int(keep[0]), int(keep[-1]) + 1

  if g.size == 0:
    return g
  top, bottom = span(np.ptp(g, axis=1) <= tol)
  rows = g[top:bottom]
  left, right = span(np.ptp(rows, axis=0) <= tol)
  return rows[:, left:right]


def _ink_box(g: np.ndarray) -> tuple[int, int, int, int] | None:
  """(top, left, bottom, right), exclusive, of pixels < INK_THRESHOLD."""
  ys, xs = np.nonzero(g < INK_THRESHOLD)
  if ys.size == 0:
    return None
  return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def estimate_glyph_height(gray: np.ndarray) -> float:
  """Median height (px) of character-like ink components, as measured for
  DATASET_GLYPH_HEIGHT; nan when there are none (a lone rule or dots)."""
  ink = np.asarray(gray) < INK_THRESHOLD
  labels, _ = ndimage.label(ink, structure=np.ones((3, 3)))
  boxes = [b for b in ndimage.find_objects(labels) if b is not None]
  if not boxes:
    return float('nan')
  hs = np.array([b[0].stop - b[0].start for b in boxes])
  ws = np.array([b[1].stop - b[1].start for b in boxes])
  # Rules (fraction bars, minus) and dots say nothing about the font size.
  keep = (hs >= 3) & (ws <= 3 * hs)
  if not keep.any():
    return float('nan')
  return float(np.median(hs[keep]))


def estimate_stroke_width(gray: np.ndarray) -> float:
  """Mean stroke width (px) as 2 x ink mass / ink perimeter; nan if no ink."""
  d = 1.0 - np.asarray(gray, np.float64) / 255.0
  # |dx| + |dy| overestimates an edge's length by 4 / pi on average over
  # orientations.
  perimeter = (np.abs(np.diff(d, axis=0)).sum() +
               np.abs(np.diff(d, axis=1)).sum()) * np.pi / 4
  if perimeter <= 0:
    return float('nan')
  return float(2.0 * d.sum() / perimeter)


def estimate_vertical_run(gray: np.ndarray) -> float:
  """Mean length (px) of vertical runs of ink (pixels < 128); nan if none.

  A glyph-scale statistic that, unlike stroke width, keeps shrinking below
  the dataset's scale (a column through a glyph crosses strokes and bowls)."""
  ink = np.asarray(gray) < 128
  starts = ink.copy()
  starts[1:] &= ~ink[:-1]
  n = int(starts.sum())
  return float(ink.sum()) / n if n else float('nan')


def solid_ink_fraction(gray: np.ndarray) -> float:
  """Share of ink pixels (< INK_THRESHOLD) that are solid (< 64); nan if no
  ink. Needs the background at 255 and the darkest ink at 0."""
  g = np.asarray(gray)
  n = int((g < INK_THRESHOLD).sum())
  return float((g < 64).sum()) / n if n else float('nan')


def _log_scale_below(g: np.ndarray) -> float:
  """log(input scale / dataset scale) from vertical run and glyph height,
  for an image whose stroke width says it is not above the dataset's scale;
  nan if neither can be measured.

  Calibrated on 202 processed im2latex-100k images (every 57th from the 2nd)
  and their LANCZOS downscales by 0.8, 0.67, 0.5: log vertical run falls
  0.50 per unit log scale (sd 0.11 at 1x), log glyph height 0.77 (sd 0.16);
  each alone estimates log scale with sd ~0.21, their mean with sd ~0.17.
  """
  ests = []
  vr = estimate_vertical_run(g)
  if np.isfinite(vr) and vr > 0:
    ests.append((np.log(vr) - np.log(DATASET_VERTICAL_RUN)) / VERTICAL_RUN_SLOPE)
  gh = estimate_glyph_height(g)
  if np.isfinite(gh) and gh > 0:
    ests.append((np.log(gh) - np.log(DATASET_GLYPH_HEIGHT_LOGMEAN)) /
                GLYPH_HEIGHT_SLOPE)
  return float(np.mean(ests)) if ests else float('nan')


def _rescale_factor(g: np.ndarray, unstretched: np.ndarray | None = None
                    ) -> float:
  """Factor that brings a cropped, normalized formula to the dataset scale.

  `unstretched`: the same crop with only the background brought to 255 (no
  contrast stretch), where the below-scale statistics are measured: the
  stretch darkens the grey, blurred strokes of a low-resolution input and
  makes it look like the dataset's scale. None: use `g`."""
  sw = estimate_stroke_width(g)
  if np.isfinite(sw) and sw > DATASET_STROKE_WIDTH * STROKE_DEAD_BAND:
    scales, widths = zip(*STROKE_WIDTH_CURVE)
    if sw <= widths[-1]:
      return 1.0 / float(np.interp(sw, widths, scales))
    return widths[-1] / (scales[-1] * sw)
  gh = estimate_glyph_height(g)
  if np.isfinite(gh) and gh < MIN_GLYPH_HEIGHT:
    raise ImageError(f'the glyphs are ~{gh:.0f} px high, too small to read '
                     f'(the model was trained on ~{DATASET_GLYPH_HEIGHT:.0f} '
                     'px); pass a higher-resolution image')
  u = g if unstretched is None else unstretched
  ls = _log_scale_below(u)
  if not np.isfinite(ls):
    return 1.0
  if ls < COARSE_LOG_SCALE:
    # Clearly coarser than half scale: the continuous estimate (sd ~0.2 in
    # log scale) is the best there is.
    return float(np.exp(-ls))
  # Between ~0.35x and 1x the continuous estimate is far too noisy (a box
  # within a few px needs ~1 %), so decide between the two common cases,
  # the dataset's scale and half of it (half-resolution render, non-retina
  # screenshot), by the share of solid ink: at half scale most strokes are
  # under a pixel wide and come out grey.
  if solid_ink_fraction(u) < HALF_SCALE_SOLID_FRACTION and ls < HALF_SCALE_MAX_LOG:
    return 2.0
  return 1.0


def _resize(g: np.ndarray, scale: float) -> np.ndarray:
  h, w = g.shape
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  im = Image.fromarray(np.clip(g, 0, 255).astype(np.uint8))
  return np.asarray(im.resize(size, Image.LANCZOS), dtype=np.float32)


def normalize_image(image: np.ndarray | Image.Image, *,
                    buckets: Sequence[tuple[int, int]] = DEFAULT_BUCKETS,
                    target_glyph_height: float | None = None,
                    scale: float | None = None,
                    overflow: bool = True) -> np.ndarray:
  """Turns an arbitrary formula image into a dataset-like model input.

  `normalize` does the same and also returns the rescale factor it applied.
  """
  return normalize(image, buckets=buckets,
                   target_glyph_height=target_glyph_height, scale=scale,
                   overflow=overflow)[0]


def normalize(image: np.ndarray | Image.Image, *,
              buckets: Sequence[tuple[int, int]] = DEFAULT_BUCKETS,
              target_glyph_height: float | None = None,
              scale: float | None = None,
              overflow: bool = True) -> tuple[np.ndarray, float]:
  """Turns an arbitrary formula image into a dataset-like model input.

  Args:
    image: a PIL image or an array (see `to_grayscale`): one formula, any
      colours, any background, any resolution.
    buckets: (H, W) canvases, tried in order; the first that holds the ink
      plus MARGIN on every side is used.
    target_glyph_height: glyph height (px, as `estimate_glyph_height`
      measures it) to rescale to; None for the dataset's DATASET_GLYPH_HEIGHT;
      0 to keep the input's scale.
    scale: the rescale factor to apply instead of estimating it (e.g. the
      known one of a render: DATASET_EM_PX / its em in px); overrides
      target_glyph_height.
    overflow: see `place`.

  Returns:
    (uint8 [H, W] with (H, W) one of `buckets` (or an overflow canvas): dark ink on white (255), the
    ink's box at (MARGIN, MARGIN); the rescale factor applied).

  Raises:
    ImageError: the image is empty, blank, too small or too coarse to read, or
      too large for the largest bucket; the message says what to do.
  """
  crop = crop_formula(image)
  if scale is None:
    target = DATASET_GLYPH_HEIGHT if target_glyph_height is None else float(
        target_glyph_height)
    crop_scale = (estimate_scale(crop) * target / DATASET_GLYPH_HEIGHT
                  if target > 0 else float(crop.reduction))
  else:
    crop_scale = float(scale) * crop.reduction
  return (place(crop.ink, crop_scale, buckets, overflow=overflow),
          crop_scale / crop.reduction)


@dataclasses.dataclass
class Crop:
  """A formula cut out of a user image, at the image's own scale.

  Attributes:
    ink: float32 [h, w] in [0, 255], ink 0 on 255, cropped to the ink, the
      contrast stretched so the darkest ink is 0.
    unstretched: the same crop with only the background brought to 255 (the
      below-scale statistics are measured here: the stretch darkens the grey,
      blurred strokes of a low-resolution input).
    reduction: the input was box-averaged by this integer factor first
      (MAX_WORK_PIXELS): a rescale factor s of the input image is
      s * reduction of this crop.
  """
  ink: np.ndarray
  unstretched: np.ndarray
  reduction: int = 1


def _reduction_factor(h: int, w: int) -> int:
  """The smallest integer k with (h // k) * (w // k) <= MAX_WORK_PIXELS."""
  if h * w <= MAX_WORK_PIXELS:
    return 1
  k = int(np.ceil(np.sqrt(h * w / MAX_WORK_PIXELS)))
  while (h // k) * (w // k) > MAX_WORK_PIXELS:
    k += 1
  return k


def _reduce(g: np.ndarray) -> tuple[np.ndarray, int]:
  """g box-averaged by the smallest integer k that brings it to at most
  MAX_WORK_PIXELS (the edge pixels that do not fill a block are dropped)."""
  k = _reduction_factor(*g.shape)
  if k == 1:
    return g, 1
  h, w = g.shape[0] // k, g.shape[1] // k
  if h == 0 or w == 0:  # a strip thinner than k: average along its length only
    k2 = int(np.ceil(g.size / MAX_WORK_PIXELS))
    if g.shape[0] >= g.shape[1]:
      n = g.shape[0] // k2
      return g[:n * k2].reshape(n, k2, g.shape[1]).mean(1, dtype=np.float32), k2
    n = g.shape[1] // k2
    return g[:, :n * k2].reshape(g.shape[0], n, k2).mean(2, dtype=np.float32), k2
  return g[:h * k, :w * k].reshape(h, k, w, k).mean((1, 3), dtype=np.float32), k


def _large_to_reduced_gray(image: np.ndarray | Image.Image
                           ) -> tuple[np.ndarray | None, int]:
  """`_reduce(to_grayscale(image))` in Pillow's C code for a large 8-bit
  L or RGB image (a 25 MP upload: ~0.05 s instead of ~1 s of float NumPy).

  Grey levels are PIL's convert('L') (the same 601 luma, rounded) and the box
  means are rounded to integers: at most a grey level from the float path.
  Returns (None, 1) for any other input, which takes the general path.
  """
  if isinstance(image, Image.Image):
    if image.mode not in ('L', 'RGB'):
      return None, 1
    w, h = image.size
  else:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and
            (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3)))):
      return None, 1
    h, w = image.shape[:2]
  k = _reduction_factor(h, w)
  if k == 1 or h // k < MIN_SIDE or w // k < MIN_SIDE:  # small, or a strip
    return None, 1
  if not isinstance(image, Image.Image):
    image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1
                            else image)
  im = image.crop((0, 0, (w // k) * k, (h // k) * k)).convert('L').reduce(k)
  return np.asarray(im, dtype=np.float32), k


def crop_formula(image: np.ndarray | Image.Image) -> Crop:
  """Grayscale, trim frames, invert dark pages, stretch contrast, crop to ink.

  Raises:
    ImageError: the image is empty, too small or blank.
  """
  g, reduction = _large_to_reduced_gray(image)
  if g is None:
    g = to_grayscale(image)
    if g.size == 0:
      raise ImageError('the image is empty (0 pixels); pass an image of a '
                       'formula')
    if min(g.shape) < MIN_SIDE:
      raise ImageError(f'the image is {g.shape[0]}x{g.shape[1]} px, too small '
                       f'to hold a formula (at least {MIN_SIDE} px a side); '
                       'pass a larger crop or a higher-resolution image')
    g, reduction = _reduce(g)
  g = _trim_uniform_border(g)
  # The background is what dominates the border; ink is a minority there.
  border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
  bg = float(np.median(border))
  if bg < 128:
    g, bg = 255.0 - g, 255.0 - bg
  # Contrast stretch so background -> 255 and the darkest ink -> 0 whatever
  # the screenshot's colours were.
  ink_level = float(np.percentile(g, 0.5))
  if bg - ink_level < 32:
    raise ImageError('the image is blank (no ink visibly darker or lighter '
                     'than its background); pass an image with a formula on '
                     'it')
  lo = float(g.min())
  unstretched = np.clip((g - lo) * (255.0 / (bg - lo)), 0, 255)
  g = np.clip((g - ink_level) * (255.0 / (bg - ink_level)), 0, 255)
  # JPEG ringing and sensor noise on the background would enlarge the box.
  g[g > 235] = 255
  box = _ink_box(g)
  if box is None:
    raise ImageError('the image is blank after removing its background; '
                     'pass an image with a formula on it')
  ink = g[box[0]:box[2], box[1]:box[3]]
  marks = ndimage.label(ink < INK_THRESHOLD, structure=np.ones((3, 3)))[1]
  if marks > MAX_MARKS:
    raise ImageError(f'this does not look like a formula: {marks:,} separate marks '
                     f'(a typeset formula has at most a few hundred); pass a '
                     'screenshot of one formula, not noise, a photo or a page')
  return Crop(ink, unstretched[box[0]:box[2], box[1]:box[3]], reduction)


SCALE_FEATURES = ('log_height_median', 'log_height_p25', 'log_height_p75',
                  'log_height_max', 'log_stroke_width', 'log_vertical_run',
                  'solid_ink_fraction', 'log_crop_height', 'log_components')
# Fitted by benchmarks/calibrate_scale.py (renders of training formulas by
# every renderer at known scales, and dataset images): log(scale) =
# weights . scale_features + bias.
SCALE_REGRESSION_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets',
                                     'scale_regression.json')


def scale_features(crop: Crop) -> np.ndarray:
  """float64 [len(SCALE_FEATURES)] glyph-size statistics of a crop (px in
  log): component heights (quartiles, max), stroke width, vertical ink run,
  solid-ink share, crop height, component count. nan where undefined."""
  g = crop.ink
  labels, _ = ndimage.label(g < INK_THRESHOLD, structure=np.ones((3, 3)))
  boxes = [b for b in ndimage.find_objects(labels) if b is not None]
  hs = np.array([b[0].stop - b[0].start for b in boxes], np.float64)
  ws = np.array([b[1].stop - b[1].start for b in boxes], np.float64)
  keep = (hs >= 2) & (ws <= 3 * hs)
  h = hs[keep] if keep.any() else hs
  if h.size == 0:
    h = np.array([float(g.shape[0])])
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.array([
        np.log(np.median(h)), np.log(np.percentile(h, 25)),
        np.log(np.percentile(h, 75)), np.log(h.max()),
        np.log(estimate_stroke_width(g)),
        np.log(estimate_vertical_run(crop.unstretched) + 1e-3),
        solid_ink_fraction(crop.unstretched), np.log(g.shape[0]),
        np.log(h.size + 1)])


@functools.lru_cache(maxsize=1)
def _scale_regression() -> tuple[np.ndarray, float] | None:
  if not os.path.exists(SCALE_REGRESSION_FILE):
    return None
  with open(SCALE_REGRESSION_FILE, encoding='utf-8') as f:
    d = json.load(f)
  if tuple(d['features']) != SCALE_FEATURES:
    raise ValueError(f'{SCALE_REGRESSION_FILE} was fitted on other features; '
                     'rerun benchmarks/calibrate_scale.py')
  return np.asarray(d['weights'], np.float64), float(d['bias'])


def regression_scale(crop: Crop) -> float | None:
  """The calibrated regression's scale estimate; None if it has no fit or a
  feature is undefined."""
  fit = _scale_regression()
  if fit is None:
    return None
  x = scale_features(crop)
  if not np.all(np.isfinite(x)):
    return None
  return float(np.exp(x @ fit[0] + fit[1]))


def estimate_scale(crop: Crop) -> float:
  """The factor that brings a crop's glyphs to the dataset's size."""
  return _rescale_factor(crop.ink, crop.unstretched)


def overflow_canvas(h: int, w: int) -> tuple[int, int] | None:
  """The smallest OVERFLOW_HEIGHTS x OVERFLOW_WIDTHS canvas holding h x w."""
  hh = next((v for v in OVERFLOW_HEIGHTS if v >= h), None)
  ww = next((v for v in OVERFLOW_WIDTHS if v >= w), None)
  return None if hh is None or ww is None else (hh, ww)


# The glyph-size search of the predictor: round 1 reads the image at the
# regression estimate times exp(offset) for each offset of the first tuple
# (plus the dataset-calibrated estimate), each later round around the best
# reading so far; the reading the model is most sure of (mean token
# log-probability) is kept. Offsets in log scale: the shipped model reads
# within about +-10 % of the true scale (README "Screenshots").
SCALE_ROUNDS = ((-0.25, 0.0, 0.25), (-0.12, 0.12))
# Candidates closer than this (log scale) to one already read are skipped.
SCALE_DEDUP = 0.03


def scale_candidates(crop: Crop, offsets: Sequence[float] = SCALE_ROUNDS[0]
                     ) -> list[float]:
  """First-round rescale factors for a crop, the most likely first.

  The calibrated regression's estimate (`regression_scale`) times
  exp(offset), then the dataset-calibrated estimate (`estimate_scale`),
  which is exact on images at the dataset's own scale.
  """
  legacy = estimate_scale(crop)
  reg = regression_scale(crop)
  center = legacy if reg is None else reg
  return dedup_scales([center * float(np.exp(o)) for o in offsets] + [legacy])


def dedup_scales(scales: Sequence[float], seen: Sequence[float] = ()
                 ) -> list[float]:
  """`scales` without those within SCALE_DEDUP of `seen` or of an earlier one."""
  out: list[float] = []
  for sc in scales:
    if all(abs(np.log(sc / o)) > SCALE_DEDUP for o in list(seen) + out):
      out.append(sc)
  return out


# Inference canvases between the training buckets (`canvas_ladder`): the
# benchmark's screenshots fill about half of the training bucket they land
# on (area-weighted), and the encoder costs in proportion to the area.
CANVAS_STEP = 1.25


def canvas_ladder(buckets: Sequence[tuple[int, int]] = DEFAULT_BUCKETS,
                  step: float = CANVAS_STEP, min_hw: tuple[int, int] | None = None
                  ) -> tuple[tuple[int, int], ...]:
  """The training buckets and canvases between them, by area (first_fit's order).

  Each side's values run from `min_hw` (default: the smallest bucket height
  and half the smallest bucket width) to the largest bucket's, through every
  bucket's own value, at most a factor `step` apart (geometric in between);
  every (height, width) pair is a canvas. A formula placed on the first one
  that holds it carries at most ~`step`x white on each side instead of the
  training bucket's, so the encoder reads less padding.
  """
  if not step > 1:
    raise ValueError(f'step={step} must be > 1')
  lo_h, lo_w = min_hw or (min(b[0] for b in buckets), min(b[1] for b in buckets) // 2)

  def side(values, lo):
    vals = sorted({v for v in values if v >= lo} | {lo})
    out = [vals[0]]
    for a, b in zip(vals, vals[1:]):
      k = int(np.ceil(np.log(b / a) / np.log(step) - 1e-9))
      out += [int(round(a * (b / a) ** (i / k))) for i in range(1, k + 1)]
    return out

  hs = side([b[0] for b in buckets], lo_h)
  ws = side([b[1] for b in buckets], lo_w)
  # By area, the project's one bucket order (on a full grid, ties between
  # equal areas never decide: the smaller sides' canvas is on it too).
  return buckets_lib.parse_buckets([(h, w) for h in hs for w in ws])


def place(ink: np.ndarray, scale: float,
          buckets: Sequence[tuple[int, int]] = DEFAULT_BUCKETS, *,
          overflow: bool = True) -> np.ndarray:
  """Rescales a crop by `scale` and puts it at (MARGIN, MARGIN) on the first
  bucket that holds it.

  Args:
    ink: a `Crop.ink`.
    scale: the rescale factor.
    buckets: (H, W) canvases, tried in order.
    overflow: a formula larger than every bucket goes on an overflow canvas
      (`overflow_canvas`; the models have no fully connected layer, so they
      read any size), shrunk to the largest one if it is larger still; False:
      refuse it (training data stays on the training buckets).

  Raises:
    ImageError: the formula vanishes when rescaled, or fits no canvas.
  """
  g = ink
  scale = float(scale)
  if not scale > 0:
    raise ValueError(f'scale={scale} must be positive')
  # Bound the work before doing it: a crop that would come out larger than
  # the largest canvas allows is refused (or shrunk in the same resize)
  # without ever being resized to that size (a 5000 px upload at a large
  # estimated scale would otherwise become gigapixels first).
  h, w = g.shape[0] * scale, g.shape[1] * scale
  limit = (OVERFLOW_HEIGHTS[-1] - 2 * MARGIN, OVERFLOW_WIDTHS[-1] - 2 * MARGIN) if overflow \
      else (max(b[0] for b in buckets) - 2 * MARGIN, max(b[1] for b in buckets) - 2 * MARGIN)
  fit = min(limit[0] / h, limit[1] / w)
  if fit * RESCALED_INK_SLACK < (MIN_OVERFLOW_SHRINK if overflow else 1.0):
    what = f'{OVERFLOW_HEIGHTS[-1]}x{OVERFLOW_WIDTHS[-1]}' if overflow else \
        f'the largest bucket ({limit[0] + 2 * MARGIN}x{limit[1] + 2 * MARGIN} with a {MARGIN} px margin)'
    raise ImageError(
        f'the formula is {round(h)}x{round(w)} px at the training scale, larger than '
        f'{what}: crop the image to one formula (or a few lines) and try again')
  if scale != 1:
    g = _resize(g, scale)
    g[g > 235] = 255
    box = _ink_box(g)
    if box is None:
      raise ImageError('the formula vanished when rescaled to the training '
                       'scale; pass a higher-resolution image')
    g = g[box[0]:box[2], box[1]:box[3]]

  h, w = g.shape
  bucket = buckets_lib.first_fit(h + 2 * MARGIN, w + 2 * MARGIN, buckets)
  if bucket is None and overflow:
    bucket = overflow_canvas(h + 2 * MARGIN, w + 2 * MARGIN)
    if bucket is None:
      # Larger than the largest canvas: shrink to fit it (a little smaller
      # glyphs read better than none), unless that would make them unreadable.
      fit = min((OVERFLOW_HEIGHTS[-1] - 2 * MARGIN) / h,
                (OVERFLOW_WIDTHS[-1] - 2 * MARGIN) / w)
      if fit < MIN_OVERFLOW_SHRINK:
        raise ImageError(
            f'the formula is {h}x{w} px at the training scale, more than '
            f'{OVERFLOW_HEIGHTS[-1]}x{OVERFLOW_WIDTHS[-1]}: crop the image to '
            'one formula (or a few lines) and try again')
      return place(g, fit, buckets, overflow=True)
  if bucket is None:
    bh, bw = max(b[0] for b in buckets), max(b[1] for b in buckets)
    raise ImageError(f'the formula is {h}x{w} px at the training scale, larger '
                     f'than the largest bucket ({bh}x{bw} with a {MARGIN} px '
                     'margin); crop the image to a single formula or split it')
  out = np.full(bucket, 255, np.uint8)
  out[MARGIN:MARGIN + h, MARGIN:MARGIN + w] = np.round(g).astype(np.uint8)
  return out
