"""im2markup's image processing: crop to ink, pad, place on a bucket, halve.

This reproduces `scripts/preprocessing/preprocess_images.py` of
harvardnlp/im2markup (with `scripts/utils/image_utils.py`), which produced the
`formula_images_processed/` images of the im2latex-100k release:

1. crop the full-page grayscale render to the bounding box of every pixel that
   is not pure white (255); a blank page becomes a white 601×61 image
   (`--crop-blank-default-size 600 60`, cropped inclusively);
2. pad 8 px on each side and paste the crop at (left=8, top=8) on a white
   canvas the size of the smallest bucket (W, H) that holds it, so the extra
   room goes to the right and the bottom, not around it; an image larger than
   every bucket keeps its padded size;
3. downsample ×2 with PIL's LANCZOS filter to (int(W / 2), int(H / 2)).

The original pastes onto an RGB canvas; resampling identical channels gives
the same values as resampling the single 'L' channel, so we stay in 'L'.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

from im2latex_jax.data import buckets as buckets_lib

# im2markup's buckets before the x2 downsampling, (W, H), in its order.
IM2MARKUP_BUCKETS_WH = buckets_lib.IM2MARKUP_BUCKETS_WH
# Pixels added on each side of the ink box (top, left, bottom, right).
PAD_SIZE = (8, 8, 8, 8)
# Size (W, H) used for a page without ink (im2markup's default).
BLANK_DEFAULT_SIZE = (600, 60)
# Downsampling factor applied last.
DOWNSAMPLE_RATIO = 2


def load_grayscale(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file as uint8 [H, W] grayscale (PIL 'L' conversion)."""
  with Image.open(path) as im:
    return np.asarray(im.convert('L'), dtype=np.uint8)


def ink_bbox(gray: np.ndarray) -> tuple[int, int, int, int] | None:
  """(y_min, y_max, x_min, x_max) inclusive of pixels != 255, None if blank."""
  ink = gray != 255
  rows = np.flatnonzero(ink.any(axis=1))
  if rows.size == 0:
    return None
  cols = np.flatnonzero(ink.any(axis=0))
  return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def crop_to_ink(gray: np.ndarray,
                default_size: tuple[int, int] | None = BLANK_DEFAULT_SIZE
                ) -> np.ndarray:
  """Crops uint8 [H, W] to its ink; a blank page gives a white default box.

  Args:
    gray: uint8 [H, W], ink darker than 255.
    default_size: (W, H) kept for a blank page (inclusive, so the result is
      (H + 1, W + 1) as in im2markup); None returns the blank page unchanged.

  Returns:
    uint8 [h, w].
  """
  gray = np.asarray(gray, dtype=np.uint8)
  box = ink_bbox(gray)
  if box is None:
    if default_size is None:
      return gray
    w, h = default_size
    out = np.full((h + 1, w + 1), 255, np.uint8)
    ch, cw = min(h + 1, gray.shape[0]), min(w + 1, gray.shape[1])
    out[:ch, :cw] = gray[:ch, :cw]
    return out
  y0, y1, x0, x1 = box
  return gray[y0:y1 + 1, x0:x1 + 1]


def smallest_bucket_wh(w: int, h: int,
                       buckets: Sequence[tuple[int, int]] = IM2MARKUP_BUCKETS_WH
                       ) -> tuple[int, int] | None:
  """First (W, H) bucket with W >= w and H >= h (im2markup's rule), or None."""
  fit = buckets_lib.first_fit(h, w, [(bh, bw) for bw, bh in buckets])
  return None if fit is None else (fit[1], fit[0])


def pad_to_bucket(crop: np.ndarray,
                  pad_size: tuple[int, int, int, int] = PAD_SIZE,
                  buckets: Sequence[tuple[int, int]] = IM2MARKUP_BUCKETS_WH
                  ) -> np.ndarray:
  """Pads the crop and places it top-left (after the padding) on its bucket."""
  top, left, bottom, right = pad_size
  h, w = crop.shape
  padded_wh = (w + left + right, h + top + bottom)
  bucket = smallest_bucket_wh(*padded_wh, buckets=buckets) or padded_wh
  out = np.full((bucket[1], bucket[0]), 255, np.uint8)
  out[top:top + h, left:left + w] = crop
  return out


def downsample(gray: np.ndarray, ratio: int = DOWNSAMPLE_RATIO) -> np.ndarray:
  """Shrinks by `ratio` with LANCZOS to (int(W / ratio), int(H / ratio))."""
  h, w = gray.shape
  im = Image.fromarray(gray, mode='L')
  im = im.resize((int(w / ratio), int(h / ratio)), Image.LANCZOS)
  return np.asarray(im, dtype=np.uint8)


def process_im2markup(gray: np.ndarray) -> np.ndarray:
  """im2markup's processing of one full-page grayscale render.

  Args:
    gray: uint8 [H, W] page (or an already-cropped render), ink dark on 255.

  Returns:
    uint8 [h, w]: cropped, padded 8 px, on the smallest fitting bucket,
    downsampled ×2 — the layout of `formula_images_processed/`.
  """
  return downsample(pad_to_bucket(crop_to_ink(gray)))


def process_file(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[int, int]:
  """Processes the image file `src` into the PNG `dst`; returns its (H, W)."""
  out = process_im2markup(load_grayscale(src))
  Image.fromarray(out, mode='L').save(dst)
  return out.shape
