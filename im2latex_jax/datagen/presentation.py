"""How a rendered formula is shown: colours, margins and what a capture does.

An engine (`engines`) gives ink coverage at a known em; a `Presentation`
turns it into the RGB picture a user would screenshot: uneven margins,
background shade or dark mode, coloured ink, then what the capture does to it
(blur, a screenshot of a screenshot: down and up again, JPEG). 2x "retina"
captures are an engine matter (the em doubles) and are recorded with it.

Every field is plain data, so a Presentation is stored per image in
`render_params.jsonl` and `apply` redraws the same image from it.
"""

from __future__ import annotations

import colorsys
import dataclasses
import io
from typing import Any

import numpy as np
from PIL import Image, ImageFilter


@dataclasses.dataclass(frozen=True)
class Presentation:
  """One picture's look.

  Attributes:
    margins: (top, right, bottom, left) background around the ink, px.
    background: RGB of the paper / page.
    ink: RGB of the glyphs.
    blur: Gaussian blur sigma in px (0: none).
    resample: a capture at this fraction of the size, scaled back up
      (1: none); a screenshot of a screenshot.
    jpeg: JPEG quality 1..95 the capture went through (0: none).
  """
  margins: tuple[int, int, int, int] = (8, 8, 8, 8)
  background: tuple[int, int, int] = (255, 255, 255)
  ink: tuple[int, int, int] = (0, 0, 0)
  blur: float = 0.0
  resample: float = 1.0
  jpeg: int = 0

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> 'Presentation':
    return cls(margins=tuple(d['margins']), background=tuple(d['background']),
               ink=tuple(d['ink']), blur=float(d['blur']),
               resample=float(d['resample']), jpeg=int(d['jpeg']))


def apply(glyphs: np.ndarray, p: Presentation) -> np.ndarray:
  """Draws ink coverage (uint8 [H, W], ink 0 on 255) as p shows it.

  Returns:
    uint8 [H + top + bottom, W + left + right, 3] RGB.
  """
  cover = 1.0 - np.asarray(glyphs, np.float32)[..., None] / 255.0  # [H, W, 1]
  bg = np.asarray(p.background, np.float32)
  ink = np.asarray(p.ink, np.float32)
  rgb = bg * (1.0 - cover) + ink * cover
  top, right, bottom, left = (int(m) for m in p.margins)
  h, w = glyphs.shape
  canvas = np.empty((h + top + bottom, w + left + right, 3), np.float32)
  canvas[...] = bg
  canvas[top:top + h, left:left + w] = rgb
  im = Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8), 'RGB')
  if p.blur > 0:
    im = im.filter(ImageFilter.GaussianBlur(p.blur))
  if p.resample != 1.0:
    size = im.size
    small = (max(1, round(size[0] * p.resample)), max(1, round(size[1] * p.resample)))
    im = im.resize(small, Image.BILINEAR).resize(size, Image.BICUBIC)
  if p.jpeg:
    buf = io.BytesIO()
    im.save(buf, format='JPEG', quality=int(p.jpeg))
    buf.seek(0)
    im = Image.open(buf).convert('RGB')
  return np.asarray(im, np.uint8)


def _dark_colour(rng: np.random.Generator) -> tuple[int, int, int]:
  """A saturated ink colour readable on a light page (link blue, red, ...)."""
  r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1.0),
                                rng.uniform(0.35, 0.7))
  return (round(r * 255), round(g * 255), round(b * 255))


def sample(rng: np.random.Generator, em_px: float, *, light: float = 0.7,
           grey: float = 0.2, coloured_ink: float = 0.2, jpeg: float = 0.25,
           blur: float = 0.15, resample: float = 0.15) -> Presentation:
  """A random presentation for training data; probabilities per property.

  Args:
    rng: the generator (seeded per image by the caller).
    em_px: the formula's em in px (margins scale with it).
    light: share of white-ish pages; `grey` of grey / tinted ones; the rest
      are dark mode (light ink on a dark page).
    coloured_ink: share of light pages with coloured ink.
    jpeg, blur, resample: shares of captures with each degradation.
  """
  margins = tuple(int(max(1, round(rng.uniform(0.1, 2.0) * em_px)))
                  for _ in range(4))
  u = rng.uniform()
  if u < light + grey:
    if u < light:
      v = rng.uniform(240, 255)
      tint = rng.uniform(-4, 4, 3)
    else:
      v = rng.uniform(195, 240)
      tint = rng.uniform(-12, 12, 3)
    background = tuple(int(np.clip(round(v + t), 0, 255)) for t in tint)
    if rng.uniform() < coloured_ink:
      ink = _dark_colour(rng)
    else:
      k = int(rng.uniform(0, 60))
      ink = (k, k, k)
  else:
    v = rng.uniform(15, 60)
    background = tuple(int(np.clip(round(v + t), 0, 255))
                       for t in rng.uniform(-6, 10, 3))
    k = int(rng.uniform(190, 256))
    ink = (min(k, 255),) * 3
  return Presentation(
      margins=margins, background=background, ink=ink,
      blur=float(rng.uniform(0.3, 1.0)) if rng.uniform() < blur else 0.0,
      resample=(float(rng.uniform(0.5, 0.85)) if rng.uniform() < resample
                else 1.0),
      jpeg=int(rng.integers(40, 96)) if rng.uniform() < jpeg else 0)
