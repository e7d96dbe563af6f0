"""Fits the glyph-size regression of `preprocess.regression_scale`.

    python benchmarks/calibrate_scale.py --data ../shared/data/im2latex100k \
        --work /tmp/calib [--n 800] [--out im2latex_jax/assets/scale_regression.json]

Calibration images: N training formulas (train + validation[:7475]; never
the holdout) drawn as screenshots by every renderer (`render-screens --as
screenshot`, random fonts, sizes, styles and presentations, seed 7), whose
true scale is recorded, plus every 4th dataset training image (scale 1).
Fits log(true scale) = w . preprocess.scale_features + b by ridge regression
and prints the error (|log(estimated / true)|, median and 90th percentile)
per renderer family, in-sample and with that family left out of the fit (how
the estimate does on a renderer it has not seen). Rerunning with the same
arguments reuses the drawn images.
"""

import argparse
import io
import json
import os
import sys

import numpy as np
from PIL import Image

from im2latex_jax.infer import preprocess
from im2latex_jax.data import layout
from im2latex_jax.datagen import engines
from im2latex_jax.datagen import screens

RIDGE = 1e-2


def _rows(args):
  data = args.data
  for engine in engines.ENGINES:
    d = os.path.join(args.work, engine)
    if not os.path.exists(os.path.join(d, layout.PARAMS_FILE)):
      rc = screens.main([
          'render-screens', '--engine', engine, '--seed', str(args.seed),
          '--n', str(args.n), '--as', 'screenshot', '--out', d,
          '--formulas', os.path.join(data, layout.FORMULAS_FILE),
          '--split-list', os.path.join(data, layout.SPLIT_FILES['train']),
          '--split-list', os.path.join(data, layout.SPLIT_FILES['validation']) + ':0:7475'])
      if rc:
        sys.exit(rc)
    for name, p in sorted(layout.read_params(d).items()):
      with Image.open(os.path.join(d, layout.IMAGES_DIR, name)) as im:
        img = np.asarray(im)
      family = engine + ('-' + p['font'] if engine == 'pdflatex' else '')
      yield family, img, float(p['true_scale'])
  names = {n for n, _ in layout.read_split_list(
      os.path.join(data, layout.SPLIT_FILES['train']), 10**9)}
  for k, (name, raw) in enumerate(layout.iter_images(layout.images_path(data))):
    if name in names and k % 4 == 0:
      with Image.open(io.BytesIO(raw)) as im:
        yield 'dataset', np.asarray(im.convert('L')), 1.0


def _fit(x, y):
  a = np.c_[x, np.ones(len(x))]
  w = np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T @ y)
  return w[:-1], w[-1]


def main(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--data', required=True)
  p.add_argument('--work', required=True)
  p.add_argument('--n', type=int, default=800)
  p.add_argument('--seed', type=int, default=7)
  p.add_argument('--out', default=preprocess.SCALE_REGRESSION_FILE)
  args = p.parse_args(argv[1:])
  fams, xs, ys = [], [], []
  for family, img, true_scale in _rows(args):
    try:
      x = preprocess.scale_features(preprocess.crop_formula(img))
    except preprocess.ImageError:
      continue
    if np.all(np.isfinite(x)):
      fams.append(family)
      xs.append(x)
      ys.append(np.log(true_scale))
  fams, x, y = np.array(fams), np.stack(xs), np.array(ys)
  w, b = _fit(x, y)
  err = np.abs(x @ w + b - y)
  top = np.array([f.split('-')[0] for f in fams])
  print(f'{len(y)} calibration images')
  print('| family | images | in-sample median | p90 | family left out: median | p90 |')
  print('|---|---|---|---|---|---|')
  for f in sorted(set(fams)):
    m = fams == f
    t = top == f.split('-')[0]
    w_lo, b_lo = _fit(x[~t], y[~t])
    e_lo = np.abs(x[m] @ w_lo + b_lo - y[m])
    print(f'| {f} | {m.sum()} | {np.median(err[m]):.3f} | {np.percentile(err[m], 90):.3f} '
          f'| {np.median(e_lo):.3f} | {np.percentile(e_lo, 90):.3f} |')
  print(f'| all | {len(y)} | {np.median(err):.3f} | {np.percentile(err, 90):.3f} | | |')
  with open(args.out, 'w', encoding='utf-8') as f:
    json.dump({'features': list(preprocess.SCALE_FEATURES),
               'weights': [round(float(v), 6) for v in w], 'bias': round(float(b), 6),
               'fitted_on': f'{len(y)} images: benchmarks/calibrate_scale.py --n {args.n} '
                            f'--seed {args.seed}',
               'median_abs_log_error': round(float(np.median(err)), 4)}, f, indent=1)
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
