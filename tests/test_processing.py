"""im2markup image processing against im2markup's own processed sample."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from im2latex_jax.data import processing

SHARED = Path(os.environ.get(
    'IM2LATEX_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
SAMPLE = SHARED / 'data' / 'im2markup_sample'


def test_bucket_and_layout_on_synthetic_page():
  page = np.full((500, 700), 255, np.uint8)
  page[100:130, 200:400] = 0  # 200 × 30 ink box.
  out = processing.process_im2markup(page)
  # Padded to 216 × 46 → bucket (240, 100) → halved to 120 × 50.
  assert out.shape == (50, 120)
  # Placed top-left after the 8 px padding: ink starts at 8 / 2 = 4.
  y0, y1, x0, x1 = processing.ink_bbox(np.where(out < 128, 0, 255))
  assert (y0, x0) == (4, 4) and (y1, x1) == (18, 103)


def test_blank_and_oversize():
  blank = processing.process_im2markup(np.full((50, 50), 255, np.uint8))
  # 601 × 61, padded to 617 × 77 → bucket (640, 80) → halved.
  assert blank.shape == (40, 320) and (blank == 255).all()
  huge = np.zeros((10, 1700), np.uint8)  # Wider than every bucket.
  assert processing.process_im2markup(huge).shape == (13, 858)


def test_matches_im2markup_processed_sample():
  if not (SAMPLE / 'images_processed').is_dir():
    pytest.skip(f'{SAMPLE} not found (set IM2LATEX_SHARED)')
  names = sorted(os.listdir(SAMPLE / 'images_processed'))
  same_size, diffs = 0, []
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # Palette PNGs with byte transparency.
    for name in names:
      ours = processing.process_im2markup(
          processing.load_grayscale(SAMPLE / 'images' / name))
      theirs = processing.load_grayscale(SAMPLE / 'images_processed' / name)
      if ours.shape == theirs.shape:
        same_size += 1
        diffs.append(np.abs(ours.astype(np.int16) - theirs).mean())
  frac, mad = same_size / len(names), float(np.mean(diffs))
  print(f'{len(names)} images: exact size {frac:.4f}, mean abs diff {mad:.5f}')
  assert len(names) == 1017
  assert frac == 1.0
  assert mad < 0.01  # Pillow-version rounding: at most 1 grey level apart.
