"""`im2latex-jax render-screens`: formulas -> screenshot-like images.

    im2latex-jax render-screens --engine katex --out data/katex \\
        --formulas DATA/im2latex_formulas.norm.lst \\
        --split-list DATA/im2latex_train_filter.lst \\
        --split-list DATA/im2latex_validate_filter.lst:0:7475 --n 5000

Each image gets a random rendering (engine-specific: pdflatex font family,
point size and resolution; KaTeX/MathJax pixel size and 2x "retina"
captures; display or inline style) and a random presentation (margins,
background, dark mode, ink colour, blur, re-capture, JPEG; `presentation`),
seeded per (seed, engine, formula index) so any image can be made again.
What was drawn is kept per image in `render_params.jsonl`, with the image's
true scale (`true_scale`: the factor that brings it to the dataset's glyph
size).

`--as dataset` (default) stores what the model is trained on: the screenshot
normalized like a user image at inference (`preprocess.normalize`), with its
true scale instead of an estimate, on im2latex's buckets; `merge-data` and
`train` read it like the real data. `--as screenshot` stores the RGB
screenshot itself (for evaluation: the screenshot benchmark does this).
Formulas that fail to render are listed in `render_failures.tsv` and on
stderr, and skipped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time
from typing import Any, Sequence

import numpy as np

from im2latex_jax import console
from im2latex_jax.infer import preprocess
from im2latex_jax.data import layout
from im2latex_jax.datagen import engines
from im2latex_jax.datagen import presentation

# pdflatex: document sizes (pt) and resolutions (dpi) drawn from: PDF viewers
# at 100-150 % zoom on 96-144 dpi screens up to print-resolution crops.
PDF_POINT_SIZES = (10, 11, 12)
PDF_DPIS = (96, 110, 120, 144, 150, 200, 240, 300)
# KaTeX / MathJax: em in px, log-uniform (web pages set 12-33 px text).
WEB_EM_RANGE = (12.0, 40.0)
RETINA_SHARE = 0.25
INLINE_SHARE = 0.3
ENGINE_IDS = {name: i for i, name in enumerate(engines.ENGINES)}


# Formulas drawn per renderer start in the command (a progress line each).
DRAW_CHUNK = 1000

def image_rng(seed: int, engine: str, index: int) -> np.random.Generator:
  """The generator of one image: independent of which others are drawn."""
  return np.random.default_rng([seed, ENGINE_IDS[engine], index])


def sample_spec(engine: str, rng: np.random.Generator,
                fonts: Sequence[str] | None = None) -> dict[str, Any]:
  """A random rendering of one formula on `engine` (see engines.render);
  pdflatex draws its math font from `fonts` (default: every engines.FONTS)."""
  style = 'inline' if rng.uniform() < INLINE_SHARE else 'display'
  if engine == 'pdflatex':
    spec = {'font': str(rng.choice(sorted(fonts or engines.FONTS))),
            'pt': int(rng.choice(PDF_POINT_SIZES)),
            'dpi': int(rng.choice(PDF_DPIS)), 'style': style}
    spec['em_px'] = engines.em_px_of(spec)
    return spec
  lo, hi = np.log(WEB_EM_RANGE[0]), np.log(WEB_EM_RANGE[1])
  em = float(np.exp(rng.uniform(lo, hi)))
  retina = bool(rng.uniform() < RETINA_SHARE)
  return {'em_px': round(em * (2 if retina else 1), 2), 'retina': retina,
          'style': style}


def draw(engine: str, formulas: Sequence[str], specs: Sequence[dict[str, Any]],
         looks: Sequence[presentation.Presentation], workers: int = 2
         ) -> list[tuple[np.ndarray | None, str | None]]:
  """Renders and presents each formula: (uint8 [H, W, 3] RGB, None) or
  (None, why it failed)."""
  glyphs = engines.render(engine, formulas, specs, workers=workers)
  out = []
  for g, look in zip(glyphs, looks):
    if g.image is None:
      out.append((None, g.error))
    else:
      out.append((presentation.apply(g.image, look), None))
  return out


def to_dataset(rgb: np.ndarray, em_px: float) -> np.ndarray:
  """A screenshot as training data: normalized at its true scale onto
  im2latex's buckets (raises preprocess.ImageError if it fits none)."""
  return preprocess.normalize_image(rgb, scale=preprocess.DATASET_EM_PX / em_px,
                                    overflow=False)


def _parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog='im2latex-jax render-screens', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--engine', required=True, choices=engines.ENGINES)
  p.add_argument('--formulas', required=True,
                 help='formula file, one per line (e.g. im2latex_formulas.norm.lst)')
  p.add_argument('--split-list', action='append', default=[],
                 help='render only the formulas of this split list '
                 '(`<image> <index>` lines); FILE:START:STOP takes a slice; '
                 'repeatable. Default: every line of --formulas')
  p.add_argument('--n', type=int, default=None,
                 help='render a seeded random sample of N of those formulas')
  p.add_argument('--out', required=True, help='output dir (official layout)')
  p.add_argument('--split', default='train', choices=sorted(layout.SPLIT_FILES))
  p.add_argument('--as', dest='mode', default='dataset',
                 choices=('dataset', 'screenshot'))
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--fonts', default=None,
                 help='pdflatex only: comma-separated math fonts to draw from, '
                 f'of {",".join(sorted(engines.FONTS))} (default: all)')
  p.add_argument('--workers', type=int, default=2)
  return p.parse_args(argv)


def parse_fonts(arg: str | None, engine: str) -> list[str] | None:
  """`--fonts` -> a list of engines.FONTS keys (None: all); ValueError names
  what is wrong."""
  if arg is None:
    return None
  if engine != 'pdflatex':
    raise ValueError(f'--fonts chooses pdflatex math fonts; --engine {engine} has its own')
  fonts = [f.strip() for f in arg.split(',') if f.strip()]
  unknown = [f for f in fonts if f not in engines.FONTS]
  if unknown or not fonts:
    raise ValueError(f'--fonts {arg!r}: {", ".join(unknown) or "no font"} is not one of '
                     f'{",".join(sorted(engines.FONTS))}')
  return fonts


def main(argv: list[str]) -> int:
  """Returns 0; 2 for bad arguments (one line on stderr)."""
  args = _parse_args(list(argv)[1:])
  try:
    fonts = parse_fonts(args.fonts, args.engine)
    engines.check_engine(args.engine)
    formulas = layout.read_formulas(args.formulas)
    if args.split_list:
      indices = []
      for arg in args.split_list:
        indices.extend(idx for _, idx in layout.read_split_list_arg(arg, len(formulas)))
      indices = sorted(set(indices))
    else:
      indices = list(range(len(formulas)))
  except (RuntimeError, OSError, ValueError, layout.DataFormatError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.n is not None:
    if args.n > len(indices):
      print(f'error: --n {args.n} but only {len(indices)} formulas were '
            'selected', file=sys.stderr)
      return 2
    pick = np.random.default_rng(args.seed).choice(len(indices), args.n,
                                                   replace=False)
    indices = sorted(indices[i] for i in pick)

  start = time.time()
  specs, looks = [], []
  for idx in indices:
    rng = image_rng(args.seed, args.engine, idx)
    spec = sample_spec(args.engine, rng, fonts)
    specs.append(spec)
    looks.append(presentation.sample(rng, spec['em_px']))
  # In chunks, for progress lines (each chunk starts its renderer once).
  progress = console.Progress(len(indices), 'formulas', 'drawn')
  drawn = []
  for lo in range(0, len(indices), DRAW_CHUNK):
    hi = lo + DRAW_CHUNK
    drawn += draw(args.engine, [formulas[i] for i in indices[lo:hi]], specs[lo:hi],
                  looks[lo:hi], workers=args.workers)
    progress.update(len(drawn))

  def finish(item):
    (rgb, err), spec = item
    if rgb is None or args.mode == 'screenshot':
      return rgb, err
    try:
      return to_dataset(rgb, spec['em_px']), None
    except preprocess.ImageError as e:
      return None, f'normalize: {e}'

  with concurrent.futures.ThreadPoolExecutor(max(1, args.workers)) as pool:
    images = list(pool.map(finish, zip(drawn, specs)))
  names, params, failures = {}, {}, []
  for idx, spec, look, (im, err) in zip(indices, specs, looks, images):
    if im is None:
      failures.append((idx, err))
      continue
    name = f'{args.engine}_{idx:06d}.png'
    names[idx] = (name, im)
    params[name] = {'formula': idx, 'engine': args.engine, 'seed': args.seed,
                    'as': args.mode, **spec,
                    'true_scale': preprocess.DATASET_EM_PX / spec['em_px'],
                    'presentation': look.to_json()}
  layout.write_dataset(args.out, formulas, args.split,
                       ((i, n, im) for i, (n, im) in sorted(names.items())),
                       params=params, failures=failures)
  for idx, err in failures:
    print(f'render-screens: formula {idx} skipped: {err}', file=sys.stderr)
  elapsed = time.time() - start
  print(f'render-screens {args.engine}: {len(names)}/{len(indices)} images in '
        f'{elapsed:.1f} s ({len(indices) / max(elapsed, 1e-9):.1f} formulas/s), '
        f'{len(failures)} failures -> {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
