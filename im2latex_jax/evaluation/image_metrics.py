"""im2markup's rendered-image metrics (`scripts/evaluation/evaluate_image.py`).

Gold and predicted formulas are rendered the same way (im2markup's evaluation
template: article 12pt + amsmath, 200 dpi, cropped to ink), binarized (pixel
<= 128 is ink) and compared as sequences of pixel columns, the shorter image
padded with blank rows at the bottom:

- image edit accuracy: `1 - Σ lev(columns) / Σ max(#columns)`, columns equal
  only if identical;
- image exact match: the images match if the column sequences are equal, or
  if every edit block of the alignment (Levenshtein opcodes over columns
  clustered so that columns differing in < 5 pixels share a symbol) that is
  not 'equal' spans < 5 columns of the gold image. As in the original, the
  rule reads the gold span only, so insertions never break a match;
- "-ws" exact match: the same after dropping blank columns from both; two
  all-blank images match.

A prediction that is missing or does not compile scores as a miss with
distance = #gold columns. Examples whose gold formula does not render are
left out, as the original only iterates over rendered gold images.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from im2latex_jax.datagen import render

# Columns whose binarized pixels differ in fewer than this many places are
# treated as the same column by the tolerant match.
COLUMN_TOLERANCE_PX = 5
# Edit blocks spanning fewer than this many gold columns are tolerated.
RUN_TOLERANCE_COLS = 5
# Gray level at or below which a pixel is ink.
INK_THRESHOLD = 128


def binarize(gray: np.ndarray) -> np.ndarray:
  """uint8 [H, W] → uint8 [W, H] of 0/1 columns (1 = ink)."""
  return (np.asarray(gray).T <= INK_THRESHOLD).astype(np.uint8)


def _pad_rows(cols: np.ndarray, height: int) -> np.ndarray:
  """Pads [W, h] columns with blank pixels at the bottom to [W, height]."""
  return np.pad(cols, ((0, 0), (0, height - cols.shape[1])))


def _column_ids(*seqs: np.ndarray) -> list[list[int]]:
  """Exact identity of columns across sequences: equal columns, equal ids."""
  table: dict[bytes, int] = {}
  return [[table.setdefault(c.tobytes(), len(table)) for c in s] for s in seqs]


def _tolerant_ids(*seqs: np.ndarray) -> list[list[int]]:
  """im2markup's `make_strs`: greedy clusters of columns within < 5 px.

  Columns are visited in order (first sequence, then the second); a column
  takes the symbol of the first representative it differs from in fewer than
  COLUMN_TOLERANCE_PX pixels, else it becomes a new representative.
  """
  reps: list[np.ndarray] = []
  exact: dict[bytes, int] = {}
  out = []
  for seq in seqs:
    ids = []
    for col in seq:
      key = col.tobytes()
      if key not in exact:
        found = None
        if reps:
          diffs = np.abs(np.stack(reps).astype(np.int32) - col).sum(axis=1)
          hits = np.flatnonzero(diffs < COLUMN_TOLERANCE_PX)
          found = int(hits[0]) if hits.size else None
        if found is None:
          found = len(reps)
          reps.append(col)
        exact[key] = found
      ids.append(exact[key])
    out.append(ids)
  return out


def tolerant_match(cols1: np.ndarray, cols2: np.ndarray) -> bool:
  """True if the column sequences differ only in runs of < 5 gold columns.

  Args:
    cols1: gold, uint8 [W1, H] binarized columns.
    cols2: prediction, uint8 [W2, H] (same H).
  """
  ids1, ids2 = _tolerant_ids(cols1, cols2)
  for tag, src_start, src_end, _, _ in Levenshtein.opcodes(ids1, ids2):
    if tag != 'equal' and src_end - src_start >= RUN_TOLERANCE_COLS:
      return False
  return True


def img_edit_distance(gold: np.ndarray, pred: Optional[np.ndarray]
                      ) -> tuple[int, int, bool, bool]:
  """Compares two grayscale renders as im2markup does.

  Args:
    gold: uint8 [H1, W1] gold render cropped to ink.
    pred: uint8 [H2, W2] predicted render, or None if it failed.

  Returns:
    (column edit distance, max(#columns), exact match, exact match w/o blank
    columns).
  """
  cols1 = binarize(gold)
  if pred is None:
    return len(cols1), len(cols1), False, False
  cols2 = binarize(pred)
  height = max(cols1.shape[1], cols2.shape[1])
  cols1, cols2 = _pad_rows(cols1, height), _pad_rows(cols2, height)
  ref = max(len(cols1), len(cols2))
  if len(cols2) == 0:
    return len(cols1), len(cols1), False, False

  ids1, ids2 = _column_ids(cols1, cols2)
  distance = Levenshtein.distance(ids1, ids2)
  match = distance == 0 or tolerant_match(cols1, cols2)

  ink1, ink2 = cols1[cols1.any(axis=1)], cols2[cols2.any(axis=1)]
  if len(ink1) == 0 or len(ink2) == 0:
    return distance, ref, match, len(ink1) == len(ink2)
  return distance, ref, match, tolerant_match(ink1, ink2)


def image_metrics_from_images(golds: Sequence[Optional[np.ndarray]],
                              preds: Sequence[Optional[np.ndarray]]) -> dict:
  """Aggregates `img_edit_distance` over pairs; golds that are None are skipped."""
  total_dist = total_ref = num = correct = correct_ws = 0
  for gold, pred in zip(golds, preds):
    if gold is None:
      continue
    dist, ref, match, match_ws = img_edit_distance(gold, pred)
    total_dist += dist
    total_ref += ref
    num += 1
    correct += match
    correct_ws += match_ws
  return {
      'image_edit_accuracy': 1.0 - total_dist / total_ref if total_ref else 0.0,
      'image_exact_match': correct / num if num else 0.0,
      'image_exact_match_ws': correct_ws / num if num else 0.0,
      'image_num_evaluated': num,
  }


def image_metrics(references: Sequence[str],
                  hypotheses: Sequence[Optional[str]], workers: int = 2,
                  dpi: int = 200, font_size_pt: int = 12) -> dict:
  """Renders gold and predicted formulas and scores them as im2markup.

  Args:
    references: gold formulas.
    hypotheses: predictions, one per reference; None/empty is a miss.
    workers: parallel pdflatex processes.
    dpi: rasterization resolution (im2markup: 200).
    font_size_pt: template font size (im2markup: 12).

  Returns:
    {'image_edit_accuracy', 'image_exact_match', 'image_exact_match_ws'} in
    [0, 1], plus 'image_num_evaluated' (golds that rendered).

  Raises:
    RuntimeError: pdflatex or pdftoppm is missing (names the Debian packages).
  """
  if len(references) != len(hypotheses):
    raise ValueError(f'{len(references)} references but {len(hypotheses)} '
                     'hypotheses; pass one (or None) per reference.')
  render.check_tex()
  # Gold and prediction interleaved, so that the failing predictions (which
  # cost a recompile of their chunk) are spread over all workers.
  pairs = [x for ref, hyp in zip(references, hypotheses) for x in (ref, hyp or '')]
  results = render.render_formulas(
      pairs, dpi=dpi, font_size_pt=font_size_pt, template='im2markup_eval',
      workers=workers)
  golds = [r.image for r in results[0::2]]
  preds = [r.image if h else None for r, h in zip(results[1::2], hypotheses)]
  return image_metrics_from_images(golds, preds)
