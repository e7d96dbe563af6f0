"""`im2latex-jax robustness`: the screenshot benchmark.

    im2latex-jax robustness --data DATA/im2latex100k --out results/robustness
        [--workdir MODEL] [--n 200] [--conditions katex-16px,pdf-times-10pt-150dpi]

The holdout's formulas (`validation[7475:]` by default: never trained on) are
drawn under a fixed grid of renderer x presentation conditions (CONDITIONS:
KaTeX and MathJax at web sizes, inline and display, light, grey, dark and
coloured pages, JPEG, blur and re-captures; pdflatex in Computer Modern and
five other math font families at PDF-viewer and print resolutions), plus the
dataset's own images of the same formulas (`clean`). Each image goes through
the same path as `predict` (`Predictor.predict_each`: normalization, then
greedy or beam decoding), and per condition the table has BLEU-4, exact
match, edit accuracy, refusals (images normalization would not read, counted
as empty predictions as im2markup counts a missing output), predictions that
ran to the length limit, and the scale estimate's error (median and 90th
percentile of |log(estimated / true scale)|; the true scale is recorded when
the image is drawn). Formulas an engine cannot render are left out of that
condition and counted.

Everything is seeded: the same --seed draws the same images. Images are kept
under OUT/images/<condition>/ (official layout + render_params.jsonl) and
reused by a rerun with the same settings; predictions go to
OUT/predictions/<condition>.tsv, figures to OUT/results.json and the markdown
table to OUT/table.md. `--oracle-scale` normalizes with the true scale
instead of the estimate (the ceiling a perfect scale estimate would give).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np
from PIL import Image

from im2latex_jax import console
from im2latex_jax.evaluation import metrics
from im2latex_jax.infer import preprocess
from im2latex_jax.data import layout
from im2latex_jax.datagen import engines
from im2latex_jax.datagen import presentation
from im2latex_jax.datagen import screens

BENCH_VERSION = 1


# ----------------------------------------------------------------------------
# The condition grid.
# ----------------------------------------------------------------------------
def _margins(rng, em):
  return tuple(int(max(1, round(rng.uniform(0.3, 1.5) * em))) for _ in range(4))


def _look(kind: str, rng: np.random.Generator, em: float
          ) -> presentation.Presentation:
  """A preset look; only the margins (and a little shade) vary per image."""
  m = _margins(rng, em)
  shade = int(rng.integers(-3, 4))
  if kind == 'white':
    return presentation.Presentation(m, (255, 255, 255), (0, 0, 0))
  if kind == 'grey':
    g = 232 + shade
    return presentation.Presentation(m, (g, g, g + 2), (34, 34, 34))
  if kind == 'dark':
    return presentation.Presentation(m, (30 + shade, 31 + shade, 36 + shade),
                                     (230, 230, 230))
  if kind == 'colour':
    return presentation.Presentation(m, (255, 255, 255), (26, 13, 171))
  if kind == 'jpeg':
    return presentation.Presentation(m, (245, 245, 245), (20, 20, 20), jpeg=70)
  if kind == 'blur':
    return presentation.Presentation(m, (255, 255, 255), (0, 0, 0), blur=0.8)
  if kind == 'reshot':
    return presentation.Presentation(m, (250, 250, 250), (0, 0, 0),
                                     resample=0.6)
  raise ValueError(f'unknown look {kind!r}')


@dataclasses.dataclass(frozen=True)
class Condition:
  """One column of the grid: how every holdout formula is drawn.

  Attributes:
    name: table row name.
    engine: one of engines.ENGINES, or 'dataset' for the dataset's images.
    spec: engines.render spec (the same for every formula).
    look: a `_look` kind.
    family: the group the issue targets are stated for ('clean', 'web-cm',
      'pdf-cm', 'pdf-other').
  """
  name: str
  engine: str
  spec: tuple[tuple[str, Any], ...] = ()
  look: str = 'white'
  family: str = 'clean'

  def spec_dict(self) -> dict[str, Any]:
    return dict(self.spec)


def _web(name, engine, em, look='white', style='display'):
  return Condition(name, engine, (('em_px', em), ('style', style)), look,
                   'web-cm')


def _pdf(font, pt, dpi, look='white', style='display'):
  name = f'pdf-{font}-{pt}pt-{dpi}dpi' + ('-inline' if style == 'inline' else '')
  if look != 'white':
    name += f'-{look}'
  return Condition(name, 'pdflatex', (('font', font), ('pt', pt), ('dpi', dpi),
                                      ('style', style)), look,
                   'pdf-cm' if font == 'cm' else 'pdf-other')


# KaTeX's em is 1.21x the page's font size: a 16 px page gives 19.4 px.
CONDITIONS: tuple[Condition, ...] = (
    Condition('clean', 'dataset'),
    _web('katex-16px', 'katex', 19.36),
    _web('katex-20px-grey', 'katex', 24.2, 'grey'),
    _web('katex-13px-inline', 'katex', 15.73, style='inline'),
    _web('katex-16px-dark', 'katex', 19.36, 'dark'),
    _web('katex-16px-retina', 'katex', 38.72),
    _web('mathjax-16px', 'mathjax', 16.0),
    _web('mathjax-24px-colour', 'mathjax', 24.0, 'colour'),
    _web('mathjax-16px-inline', 'mathjax', 16.0, style='inline'),
    _web('mathjax-20px-jpeg', 'mathjax', 20.0, 'jpeg'),
    _web('mathjax-32px-reshot', 'mathjax', 32.0, 'reshot'),
    _pdf('cm', 10, 96),
    _pdf('cm', 12, 144),
    _pdf('cm', 10, 300, 'blur'),
    _pdf('cm', 11, 120, style='inline'),
    _pdf('times', 10, 150),
    _pdf('txfonts', 12, 110),
    _pdf('palatino', 11, 120),
    _pdf('pxfonts', 10, 144),
    _pdf('euler', 10, 150),
)
CONDITIONS_BY_NAME = {c.name: c for c in CONDITIONS}


def _condition_rng(seed: int, cond: Condition, index: int) -> np.random.Generator:
  key = [ord(ch) for ch in cond.name]
  return np.random.default_rng([seed, BENCH_VERSION, index] + key)


# ----------------------------------------------------------------------------
# Images.
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class Item:
  """One benchmark image: its formula and how it was drawn."""
  index: int
  image: np.ndarray | None
  true_scale: float
  error: str | None = None
  params: dict[str, Any] = dataclasses.field(default_factory=dict)


def draw_condition(cond: Condition, formulas: list[str], indices: list[int],
                   seed: int, clean_images: dict[int, np.ndarray] | None = None,
                   workers: int = 2) -> list[Item]:
  """Draws formulas[i] for i in indices under `cond`, deterministically."""
  if cond.engine == 'dataset':
    clean_images = clean_images or {}
    return [Item(i, clean_images.get(i), 1.0,
                 None if i in clean_images else 'no dataset image')
            for i in indices]
  spec = cond.spec_dict()
  em = engines.em_px_of(spec)
  looks = [_look(cond.look, _condition_rng(seed, cond, i), em) for i in indices]
  drawn = screens.draw(cond.engine, [formulas[i] for i in indices],
                       [spec] * len(indices), looks, workers=workers)
  items = []
  for i, look, (rgb, err) in zip(indices, looks, drawn):
    items.append(Item(i, rgb, preprocess.DATASET_EM_PX / em, err,
                      {'formula': i, 'engine': cond.engine, **spec,
                       'em_px': em, 'true_scale': preprocess.DATASET_EM_PX / em,
                       'presentation': look.to_json()}))
  return items


def _save_items(d: str, formulas: list[str], items: list[Item], meta: dict) -> None:
  layout.write_dataset(
      d, formulas, 'test',
      ((it.index, f'{it.index:06d}.png', it.image) for it in items
       if it.image is not None),
      params={f'{it.index:06d}.png': it.params for it in items
              if it.image is not None},
      failures=[(it.index, it.error) for it in items if it.image is None])
  with open(os.path.join(d, 'condition.json'), 'w', encoding='utf-8') as f:
    json.dump(meta, f, sort_keys=True)


def _load_items(d: str, meta: dict, indices: list[int]) -> list[Item] | None:
  """The saved images of a condition if they were drawn with `meta`."""
  try:
    with open(os.path.join(d, 'condition.json'), encoding='utf-8') as f:
      if json.load(f) != meta:
        return None
  except (OSError, ValueError):
    return None
  params = layout.read_params(d)
  errors = {}
  fail_path = os.path.join(d, layout.FAILURES_FILE)
  if os.path.exists(fail_path):
    with open(fail_path, encoding='utf-8') as f:
      for line in f:
        idx, reason = line.rstrip('\n').split('\t')[:2]
        errors[int(idx)] = reason
  items = []
  for i in indices:
    name = f'{i:06d}.png'
    if name in params:
      with Image.open(os.path.join(d, layout.IMAGES_DIR, name)) as im:
        arr = np.asarray(im.convert('RGB') if im.mode != 'L' else im)
      items.append(Item(i, arr, float(params[name]['true_scale']), None, params[name]))
    else:
      items.append(Item(i, None, 1.0, errors.get(i, 'missing')))
  return items


# ----------------------------------------------------------------------------
# Reading and scoring.
# ----------------------------------------------------------------------------
def score(cond: Condition, items: list[Item], formulas: list[str], predictor,
          beam: int = 1, oracle_scale: bool = False) -> tuple[dict, list[tuple]]:
  """Reads every drawn image of a condition; returns (figures, rows)."""
  drawn = [it for it in items if it.image is not None]
  t = time.perf_counter()
  preds = predictor.predict_each(
      [it.image for it in drawn], beam_size=beam,
      scales=[it.true_scale for it in drawn] if oracle_scale else None)
  seconds = time.perf_counter() - t
  max_len = getattr(predictor, 'max_len', None)
  refs, hyps, rows, log_err, at_limit = [], [], [], [], 0
  for it, p in zip(drawn, preds):
    refs.append(formulas[it.index])
    if isinstance(p, Exception):
      hyps.append(None)
      rows.append((it.index, 'refused', str(p), formulas[it.index], None))
      continue
    hyps.append(p.latex)
    if max_len and len(p.tokens) >= max_len - 1:
      at_limit += 1
    if p.scale is not None and it.true_scale > 0:
      log_err.append(abs(float(np.log(p.scale / it.true_scale))))
    rows.append((it.index, 'ok', p.latex, formulas[it.index], getattr(p, 'readings', None)))
  m = metrics.text_metrics(refs, hyps) if refs else {
      'bleu4': 0.0, 'edit_accuracy': 0.0, 'exact_match': 0.0}
  refused = sum(1 for r in rows if r[1] == 'refused')
  fig = {
      'condition': cond.name, 'engine': cond.engine, 'family': cond.family,
      'spec': cond.spec_dict(), 'look': cond.look,
      'images': len(drawn), 'render_failures': len(items) - len(drawn),
      'bleu4': m['bleu4'], 'exact_match': 100 * m['exact_match'],
      'edit_accuracy': 100 * m['edit_accuracy'],
      'refused': refused, 'refused_pct': 100 * refused / max(1, len(drawn)),
      'at_length_limit': at_limit,
      'scale_err_median': float(np.median(log_err)) if log_err else None,
      'scale_err_p90': float(np.percentile(log_err, 90)) if log_err else None,
      'seconds': seconds,
  }
  return fig, rows


def _fmt(x, digits=1):
  return '—' if x is None else f'{x:.{digits}f}'


def table(figs: list[dict]) -> str:
  """The markdown table of a benchmark run (one row a condition, then the
  overall row: every image of every condition pooled)."""
  head = ('| condition | images | BLEU-4 | exact % | edit acc % | refused % | '
          'at length limit | scale err median | scale err p90 |\n'
          '|---|---|---|---|---|---|---|---|---|\n')
  lines = []
  for f in figs:
    lines.append(
        f"| {f['condition']} | {f['images']}"
        + (f" (+{f['render_failures']} unrendered)" if f['render_failures'] else '')
        + f" | {f['bleu4']:.1f} | {f['exact_match']:.1f} | {f['edit_accuracy']:.1f}"
        f" | {f['refused_pct']:.1f} | {f['at_length_limit']} | "
        f"{_fmt(f['scale_err_median'], 3)} | {_fmt(f['scale_err_p90'], 3)} |")
  return head + '\n'.join(lines) + '\n'


def summary(figs: list[dict], overall: dict) -> str:
  n = sum(f['images'] for f in figs)
  refused = sum(f['refused'] for f in figs)
  by_family: dict[str, list[float]] = {}
  for f in figs:
    by_family.setdefault(f['family'], []).append(f['bleu4'])
  fam = ', '.join(f'{k} min {min(v):.1f}' for k, v in sorted(by_family.items()))
  return (f"overall (all {n} images pooled): BLEU-4 {overall['bleu4']:.1f}, "
          f"exact {100 * overall['exact_match']:.1f} %, refused "
          f"{100 * refused / max(1, n):.1f} %; per family: {fam}")


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------
def _parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='im2latex-jax robustness', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--data', required=True,
                 help='dataset dir in the official layout (e.g. the '
                 'im2latex-100k manual dir)')
  p.add_argument('--split', default='validation',
                 choices=sorted(layout.SPLIT_FILES))
  p.add_argument('--start', type=int, default=7475,
                 help='first example of the split to use (7475: the '
                 'reduced-label protocol holdout)')
  p.add_argument('--n', type=int, default=200,
                 help='formulas per condition (the first N from --start)')
  p.add_argument('--workdir', default=None,
                 help='model: training workdir or export dir (default: shipped)')
  p.add_argument('--out', required=True)
  p.add_argument('--conditions', default=None,
                 help='comma-separated subset of: ' + ', '.join(CONDITIONS_BY_NAME))
  p.add_argument('--beam', type=int, default=1)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--oracle-scale', action='store_true',
                 help='normalize with the true scale (an upper bound for any '
                 'scale estimate)')
  p.add_argument('--workers', type=int, default=2)
  return p.parse_args(argv)


def _clean_images(data: str, names: dict[str, int]) -> dict[int, np.ndarray]:
  out = {}
  for name, raw in layout.iter_images(layout.images_path(data)):
    if name in names:
      with Image.open(io.BytesIO(raw)) as im:
        out[names[name]] = np.asarray(im.convert('L'))
  return out


def run(args: argparse.Namespace, predictor_factory: Callable[[], Any],
        log=print) -> list[dict]:
  """Draws (or reuses) every condition's images, reads and scores them."""
  conds = list(CONDITIONS)
  if args.conditions:
    wanted = [c.strip() for c in args.conditions.split(',') if c.strip()]
    unknown = [c for c in wanted if c not in CONDITIONS_BY_NAME]
    if unknown:
      raise ValueError(f'unknown condition(s) {unknown}; choose from '
                       f'{", ".join(CONDITIONS_BY_NAME)}')
    conds = [CONDITIONS_BY_NAME[c] for c in wanted]
  layout.check_data_dir(args.data)
  formulas = layout.read_formulas(os.path.join(args.data, layout.FORMULAS_FILE))
  pairs = layout.read_split_list(
      os.path.join(args.data, layout.split_file(args.split)), len(formulas))
  pairs = pairs[args.start:args.start + args.n]
  if not pairs:
    raise ValueError(f'{args.split}[{args.start}:] of {args.data} is empty; '
                     'lower --start')
  indices = [idx for _, idx in pairs]
  for c in conds:
    if c.engine != 'dataset':
      engines.check_engine(c.engine)
  clean = (_clean_images(args.data, {name: idx for name, idx in pairs})
           if any(c.engine == 'dataset' for c in conds) else None)

  predictor = predictor_factory()
  figs, all_refs, all_hyps = [], [], []
  os.makedirs(os.path.join(args.out, 'predictions'), exist_ok=True)
  progress = console.Progress(len(conds), 'conditions', 'measured')
  for k, cond in enumerate(conds, 1):
    d = os.path.join(args.out, 'images', cond.name)
    # Through JSON, so that it compares equal to the saved copy.
    meta = json.loads(json.dumps({
        'version': BENCH_VERSION, 'seed': args.seed,
        'data': os.path.abspath(args.data), 'split': args.split,
        'indices': indices, 'condition': dataclasses.asdict(cond)}))
    t = time.perf_counter()
    items = None if cond.engine == 'dataset' else _load_items(d, meta, indices)
    if items is None:
      items = draw_condition(cond, formulas, indices, args.seed, clean,
                             workers=args.workers)
      if cond.engine != 'dataset':
        _save_items(d, formulas, items, meta)
    t_draw = time.perf_counter() - t
    fig, rows = score(cond, items, formulas, predictor, beam=args.beam,
                      oracle_scale=args.oracle_scale)
    fig['draw_seconds'] = t_draw
    figs.append(fig)
    with open(os.path.join(args.out, 'predictions', cond.name + '.tsv'), 'w',
              encoding='utf-8') as f:
      for idx, status, pred, gold, _ in rows:
        f.write(f'{idx}\t{status}\t{" ".join(pred.split())}\t{gold}\n')
        all_refs.append(gold)
        all_hyps.append(pred if status == 'ok' else None)
    # Every reading of the glyph-size search, for policy analysis
    # (benchmarks/search_policy.py): one JSON line per image.
    if any(r[4] for r in rows):
      with open(os.path.join(args.out, 'predictions', cond.name + '.readings.jsonl'), 'w',
                encoding='utf-8') as f:
        for idx, _, _, gold, readings in rows:
          f.write(json.dumps({'index': idx, 'gold': gold, 'readings': readings or []}) + '\n')
    log(f"robustness: {cond.name}: BLEU-4 {fig['bleu4']:.1f}, refused "
        f"{fig['refused']}/{fig['images']} (draw {t_draw:.0f} s, read "
        f"{fig['seconds']:.0f} s); {progress.line(k)}")
  overall = metrics.text_metrics(all_refs, all_hyps) if all_refs else {
      'bleu4': 0.0, 'exact_match': 0.0, 'edit_accuracy': 0.0}
  model_id = getattr(predictor, 'model_id', None)
  text = (f'Screenshot benchmark: {args.split}[{args.start}:{args.start + len(pairs)}]'
          f' of {os.path.basename(os.path.abspath(args.data))}, {len(pairs)} formulas '
          f'per condition, model {model_id}, beam {args.beam}, seed {args.seed}'
          + (', oracle scale' if args.oracle_scale else '') + '.\n\n'
          + table(figs) + '\n' + summary(figs, overall) + '\n')
  with open(os.path.join(args.out, 'table.md'), 'w', encoding='utf-8') as f:
    f.write(text)
  with open(os.path.join(args.out, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump({'model': model_id, 'n': len(pairs), 'beam': args.beam,
               'seed': args.seed, 'oracle_scale': args.oracle_scale,
               'overall': {'bleu4': overall['bleu4'],
                           'exact_match': 100 * overall['exact_match'],
                           'edit_accuracy': 100 * overall['edit_accuracy']},
               'conditions': figs}, f, indent=1, sort_keys=True)
  log(text)
  return figs


def main(argv: list[str], predictor=None) -> int:
  """Returns 0; 2 with one line on stderr for bad arguments or data."""
  args = _parse_args(list(argv)[1:])

  def factory():
    if predictor is not None:
      return predictor
    from im2latex_jax.infer import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
    return predictor_lib.load_predictor(args.workdir)

  try:
    run(args, factory)
  except (ValueError, RuntimeError, OSError, layout.DataFormatError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
