"""Do two spellings of each formula render to the same image?

Used to hold `latex.idiomatic` to its rule (the idiomatic string renders as the
tokens do): both sides go through the project's pdflatex renderer
(`datagen.render`, the dataset's template, display style, 200 dpi) and their
ink-cropped images are compared pixel for pixel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

IDENTICAL = 'identical'
DIFFERS = 'differs'
FIRST_FAILS = 'first does not render'
SECOND_FAILS = 'second does not render'
BOTH_FAIL = 'neither renders'


def compare_renders(first: Sequence[str], second: Sequence[str], *,
                    workers: int = 2) -> list[str]:
  """One verdict per pair (IDENTICAL, DIFFERS or which side failed)."""
  from im2latex_jax.datagen import render  # pylint: disable=g-import-not-at-top
  if len(first) != len(second):
    raise ValueError(f'{len(first)} formulas against {len(second)}')
  results = render.render_formulas(list(first) + list(second), workers=workers)
  n = len(first)
  verdicts = []
  for a, b in zip(results[:n], results[n:]):
    if a.image is None or b.image is None:
      verdicts.append(BOTH_FAIL if a.image is None and b.image is None
                      else FIRST_FAILS if a.image is None else SECOND_FAILS)
    elif a.image.shape == b.image.shape and np.array_equal(a.image, b.image):
      verdicts.append(IDENTICAL)
    else:
      verdicts.append(DIFFERS)
  return verdicts
