"""Benchmark of the TeX rendering engine on the im2latex-100k validation set.

Renders the 8,475 validation formulas through `im2latex_jax.datagen.render` with the
'dataset' template and im2markup's processing, and compares them with the
dataset's own images. Prints formulas/s, the failure rate, and the median
ratio of the ink box of our processed image to that of the dataset image,
for width and height, and how often both land on the same bucket; writes everything as JSON.

  python benchmarks/render_bench.py [--limit N] [--workers 2] \
      [--out /tmp/render_bench.json]

Targets (shared/DESIGN.md): ≥ 80 formulas/s on 2 cores, ≤ 1 % failures, size
ratios within 5 %.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from im2latex_jax.datagen import render  # pylint: disable=g-import-not-at-top
from im2latex_jax.data import processing  # pylint: disable=g-import-not-at-top

SHARED = Path(os.environ.get(
    'IM2LATEX_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
DATA = SHARED / 'data' / 'im2latex100k'


def _ink_hw(gray: np.ndarray) -> tuple[int, int] | None:
  box = processing.ink_bbox(gray)
  if box is None:
    return None
  y0, y1, x0, x1 = box
  return y1 - y0 + 1, x1 - x0 + 1


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--limit', type=int, default=None)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--chunk-size', type=int, default=200)
  parser.add_argument('--out', default='/tmp/render_bench.json')
  args = parser.parse_args()

  formulas = (DATA / 'im2latex_formulas.norm.lst').read_text(
      encoding='utf-8').split('\n')
  examples = [line.split() for line in
              (DATA / 'im2latex_validate_filter.lst').read_text().splitlines()
              if line.strip()]
  if args.limit:
    examples = examples[:args.limit]
  names = [name for name, _ in examples]
  batch = [formulas[int(idx)] for _, idx in examples]

  start = time.time()
  results = render.render_formulas(batch, workers=args.workers,
                                   chunk_size=args.chunk_size)
  render_s = time.time() - start
  failures = [r for r in results if r.image is None]

  wanted = set(names)
  gold: dict[str, np.ndarray] = {}
  with tarfile.open(DATA / 'formula_images_processed.tar.gz') as tar:
    for member in tar:
      base = os.path.basename(member.name)
      if member.isfile() and base in wanted:
        with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
          gold[base] = np.asarray(im.convert('L'))

  w_ratio, h_ratio, same_shape = [], [], 0
  for name, res in zip(names, results):
    if res.image is None or name not in gold:
      continue
    # Both through the same processing (which halves and, with LANCZOS,
    # spreads ink by a pixel or two), then ink box against ink box.
    processed = processing.process_im2markup(res.image)
    ours, theirs = _ink_hw(processed), _ink_hw(gold[name])
    if ours is None or theirs is None:
      continue
    h_ratio.append(ours[0] / theirs[0])
    w_ratio.append(ours[1] / theirs[1])
    same_shape += processed.shape == gold[name].shape

  report = {
      'formulas': len(batch),
      'workers': args.workers,
      'chunk_size': args.chunk_size,
      'render_seconds': round(render_s, 2),
      'formulas_per_second': round(len(batch) / render_s, 1),
      'failures': len(failures),
      'failure_rate': round(len(failures) / max(1, len(batch)), 5),
      'median_width_ratio': round(float(np.median(w_ratio)), 4),
      'median_height_ratio': round(float(np.median(h_ratio)), 4),
      'compared': len(w_ratio),
      'same_bucket_fraction': round(same_shape / max(1, len(w_ratio)), 4),
      'failure_examples': [
          {'index': r.index, 'image': names[r.index], 'error': r.error,
           'formula': batch[r.index][:200]} for r in failures[:50]],
  }
  with open(args.out, 'w', encoding='utf-8') as fh:
    json.dump(report, fh, indent=1)
  for key, value in report.items():
    if key != 'failure_examples':
      print(f'{key}: {value}')
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
