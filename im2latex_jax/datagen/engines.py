"""Formula renderers: pdflatex in several math fonts, KaTeX, MathJax.

Every engine returns, per formula, a `Glyphs`: the ink as uint8 grayscale
coverage (ink 0, paper 255) cropped to the ink, and the em (font size) in
output pixels, which is what tells the true scale of the image
(`preprocess.DATASET_EM_PX / em_px` brings it to the dataset's glyph size).
Colours, margins and degradations are added afterwards by `presentation`, the
same way for every engine.

* pdflatex (`render.render_formulas`): the math font families that Debian's
  texlive-fonts-recommended and texlive-latex-recommended provide (FONTS), at
  a chosen point size and display or inline style, rasterized by pdftoppm
  (anti-aliased) at a chosen resolution.
* KaTeX: the copy vendored for the web page, laid out by Debian's Chromium
  (driven by Playwright, no network: every request is answered from the
  package), many formulas per page and one screenshot per page.
* MathJax: npm `mathjax-full` in node, SVG output (`mathjax_svg.js`),
  rasterized by librsvg (`rsvg-convert`).

A formula that an engine cannot render gets `image=None` and the reason;
nothing raises for a bad formula.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Sequence

import numpy as np
from PIL import Image

from im2latex_jax.datagen import render as tex
from im2latex_jax.data import processing

ENGINES = ('pdflatex', 'katex', 'mathjax')

# pdflatex math font families -> packages (comma separated). Chosen from what
# Debian's texlive-fonts-recommended / -latex-recommended ship (the ~1 GB
# texlive-fonts-extra is not assumed): Computer Modern (LaTeX's default, the
# dataset's), the two families journals use most (Times: mathptmx and
# txfonts; Palatino: mathpazo and pxfonts, each pair with different math
# glyphs) and Euler (upright, calligraphic letters), the farthest from CM.
FONTS = {
    'cm': '',
    'times': 'mathptmx',
    'txfonts': 'txfonts',
    'palatino': 'mathpazo',
    'pxfonts': 'pxfonts',
    'euler': 'euler',
}
# TeX points per inch.
PT_PER_INCH = 72.27

CHROMIUM_ENV = 'IM2LATEX_CHROMIUM'
NODE_MODULES_ENV = 'IM2LATEX_NODE_MODULES'
MATHJAX_VERSION = '3.2.2'
_HERE = os.path.dirname(os.path.abspath(__file__))
KATEX_DIR = os.path.join(os.path.dirname(_HERE), 'serve', 'static', 'vendor',
                         'katex')
MATHJAX_SCRIPT = os.path.join(_HERE, 'mathjax_svg.js')
# Flags that keep headless Chromium off the network and quiet (as root).
CHROMIUM_ARGS = ('--no-sandbox', '--disable-gpu', '--disable-quic',
                 '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync',
                 '--font-render-hinting=none')
# Formulas per Chromium page (one screenshot each).
KATEX_PAGE = 24
# KaTeX's stylesheet sets `.katex { font-size: 1.21em }`.
KATEX_EM_FACTOR = 1.21
# Plain-TeX forms the data uses, as `render.repair_formula` rewrites them.
MACROS = {'\\mymatrix': '\\begin{matrix}#1\\end{matrix}',
          '\\mypmatrix': '\\begin{pmatrix}#1\\end{pmatrix}',
          '\\mycases': '\\begin{cases}#1\\end{cases}'}


@dataclasses.dataclass
class Glyphs:
  """One formula as an engine drew it.

  Attributes:
    image: uint8 [H, W], ink dark on 255, cropped to the ink; None on failure.
    em_px: the em (font size) in pixels of `image`.
    error: None, or why the formula has no image.
  """
  image: np.ndarray | None
  em_px: float
  error: str | None = None


def em_px_of(spec: dict[str, Any]) -> float:
  """The em in px of a spec: `em_px`, or pdflatex's `pt` at `dpi`."""
  if 'em_px' in spec:
    return float(spec['em_px'])
  return float(spec['pt']) / PT_PER_INCH * float(spec['dpi'])


def render(engine: str, formulas: Sequence[str], specs: Sequence[dict[str, Any]],
           workers: int = 2) -> list[Glyphs]:
  """Renders formulas[i] with specs[i] on one engine.

  Args:
    engine: one of ENGINES.
    formulas: LaTeX math without delimiters (tokenized or not).
    specs: per formula: `style` ('display' or 'inline') and either `em_px`
      (katex, mathjax) or `font` (a FONTS key), `pt` and `dpi` (pdflatex).
    workers: parallel TeX / rsvg processes.

  Returns:
    One Glyphs per formula, in order.
  """
  if len(formulas) != len(specs):
    raise ValueError(f'{len(formulas)} formulas but {len(specs)} specs')
  if engine == 'pdflatex':
    return _render_pdflatex(formulas, specs, workers)
  if engine == 'katex':
    return _render_katex(formulas, specs)
  if engine == 'mathjax':
    return _render_mathjax(formulas, specs, workers)
  raise ValueError(f'engine {engine!r} is not one of {ENGINES}')


def check_engine(engine: str) -> None:
  """Raises RuntimeError saying what to install if `engine` cannot run here."""
  if engine == 'pdflatex':
    tex.check_tex()
  elif engine == 'katex':
    _chromium()
    try:
      import playwright.sync_api  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise RuntimeError('the katex renderer needs the playwright package: '
                         '`pip install playwright` (it drives Debian\'s '
                         'chromium; no browser download)') from None
  elif engine == 'mathjax':
    _node_modules()
    if shutil.which('rsvg-convert') is None:
      raise RuntimeError('the mathjax renderer needs rsvg-convert: '
                         '`apt-get install librsvg2-bin`')
  else:
    raise ValueError(f'engine {engine!r} is not one of {ENGINES}')


# ----------------------------------------------------------------------------
# pdflatex
# ----------------------------------------------------------------------------
def _render_pdflatex(formulas, specs, workers) -> list[Glyphs]:
  groups: dict[tuple, list[int]] = {}
  for i, s in enumerate(specs):
    font = s.get('font', 'cm')
    if font not in FONTS:
      raise ValueError(f'font {font!r} is not one of {sorted(FONTS)}')
    key = (font, int(s['pt']), s.get('style', 'display'), float(s['dpi']))
    groups.setdefault(key, []).append(i)

  def run(item):
    (font, pt, style, dpi), idxs = item
    results = tex.render_formulas(
        [formulas[i] for i in idxs], dpi=dpi, font_size_pt=pt,
        font_package=FONTS[font] or None, style=style, workers=1,
        chunk_size=len(idxs))
    return idxs, results, pt / PT_PER_INCH * dpi

  out: list[Glyphs | None] = [None] * len(formulas)
  # Threads: the work is in the pdflatex / pdftoppm subprocesses.
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    for idxs, results, em in pool.map(run, sorted(groups.items())):
      for i, r in zip(idxs, results):
        out[i] = Glyphs(r.image, em, r.error)
  return out


# ----------------------------------------------------------------------------
# KaTeX in Chromium
# ----------------------------------------------------------------------------
_ORIGIN = 'http://im2latex.render'
_KATEX_PAGE_HTML = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="%(origin)s/katex/katex.min.css">
<script src="%(origin)s/katex/katex.min.js"></script>
<style>html, body { margin: 0; background: #fff; color: #000; }
.f { display: block; width: max-content; white-space: nowrap; }
.katex-display { margin: 0; }</style></head>
<body><div id="root"></div><script>
window.renderAll = async function (items, macros) {
  const root = document.getElementById('root');
  root.innerHTML = '';
  const errors = [];
  for (const it of items) {
    const div = document.createElement('div');
    div.className = 'f';
    div.style.fontSize = it.size + 'px';
    div.style.padding = it.pad + 'px';
    root.appendChild(div);
    try {
      katex.render(it.tex, div, {displayMode: it.display, throwOnError: true,
                                 strict: 'ignore', macros: Object.assign({}, macros),
                                 maxExpand: 2000, output: 'html'});
      errors.push(null);
    } catch (e) {
      errors.push(String(e.message || e));
    }
  }
  await document.fonts.ready;
  const boxes = Array.from(root.children).map(d => {
    const r = d.getBoundingClientRect();
    return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];
  });
  return {errors, boxes, dpr: window.devicePixelRatio};
};
</script></body></html>"""


def _chromium() -> str:
  path = os.environ.get(CHROMIUM_ENV) or shutil.which('chromium') or (
      '/usr/bin/chromium' if os.path.exists('/usr/bin/chromium') else None)
  if not path:
    raise RuntimeError('the katex renderer needs Chromium: `apt-get install '
                       f'chromium` (or set ${CHROMIUM_ENV} to a Chrome binary)')
  return path


def _serve_katex(route) -> None:
  url = route.request.url
  rel = url[len(_ORIGIN):].split('?')[0].lstrip('/')
  if rel == 'index.html':
    route.fulfill(status=200, content_type='text/html',
                  body=_KATEX_PAGE_HTML % {'origin': _ORIGIN})
    return
  if rel.startswith('katex/'):
    path = os.path.normpath(os.path.join(KATEX_DIR, rel[len('katex/'):]))
    if path.startswith(KATEX_DIR) and os.path.isfile(path):
      route.fulfill(status=200, path=path)
      return
  route.fulfill(status=404, body='not found')


def _render_katex(formulas, specs) -> list[Glyphs]:
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  out: list[Glyphs] = []
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=_chromium(),
                                args=list(CHROMIUM_ARGS))
    try:
      page = browser.new_page(viewport={'width': 1600, 'height': 900},
                              device_scale_factor=1)
      # Nothing leaves the machine: the page and KaTeX come from the package.
      page.route('**/*', lambda route: (
          _serve_katex(route) if route.request.url.startswith(_ORIGIN)
          else route.abort()))
      page.goto(f'{_ORIGIN}/index.html')
      for start in range(0, len(formulas), KATEX_PAGE):
        idxs = range(start, min(start + KATEX_PAGE, len(formulas)))
        out.extend(_katex_page(page, [formulas[i] for i in idxs],
                               [specs[i] for i in idxs]))
    finally:
      browser.close()
  return out


def _katex_page(page, formulas, specs) -> list[Glyphs]:
  items = []
  for f, s in zip(formulas, specs):
    em = em_px_of(s)
    items.append({'tex': tex.repair_formula(f or ''),
                  'display': s.get('style', 'display') == 'display',
                  'size': em / KATEX_EM_FACTOR,
                  # Room for ink that overhangs the box (italics, big
                  # delimiters) without touching the neighbour.
                  'pad': int(np.ceil(em))})
  res = page.evaluate('([items, macros]) => window.renderAll(items, macros)',
                      [items, MACROS])
  png = page.screenshot(full_page=True, type='png')
  shot = np.asarray(Image.open(io.BytesIO(png)).convert('L'))
  dpr = float(res['dpr'])
  out = []
  for it, err, (x, y, w, h) in zip(items, res['errors'], res['boxes']):
    em = it['size'] * KATEX_EM_FACTOR * dpr
    if err:
      out.append(Glyphs(None, em, 'katex: ' + err.split('\n')[0][:300]))
      continue
    x0, y0 = int(np.floor(x * dpr)), int(np.floor(y * dpr))
    x1, y1 = int(np.ceil((x + w) * dpr)), int(np.ceil((y + h) * dpr))
    out.append(_cropped(shot[max(0, y0):y1, max(0, x0):x1], em))
  return out


def _cropped(gray: np.ndarray, em: float) -> Glyphs:
  crop = processing.crop_to_ink(np.asarray(gray, np.uint8), default_size=None)
  if crop is None or crop.size == 0 or (crop == 255).all():
    return Glyphs(None, em, 'empty render (no ink)')
  return Glyphs(crop, em)


# ----------------------------------------------------------------------------
# MathJax in node, rasterized by librsvg
# ----------------------------------------------------------------------------
def node_modules_dir() -> str | None:
  """Where `mathjax-full` is installed: $IM2LATEX_NODE_MODULES, else next to
  this Python (`<prefix>/lib/im2latex-node/node_modules`, where setup.sh puts
  it); None if neither holds it."""
  for d in (os.environ.get(NODE_MODULES_ENV),
            os.path.join(sys.prefix, 'lib', 'im2latex-node', 'node_modules')):
    if d and os.path.isfile(os.path.join(d, 'mathjax-full', 'package.json')):
      return d
  return None


def _node_modules() -> str:
  d = node_modules_dir()
  if shutil.which('node') is None:
    raise RuntimeError('the mathjax renderer needs node: `apt-get install '
                       'nodejs npm`')
  if d is None:
    target = os.path.join(sys.prefix, 'lib', 'im2latex-node')
    raise RuntimeError(
        'the mathjax renderer needs npm mathjax-full: `npm install --prefix '
        f'{target} mathjax-full@{MATHJAX_VERSION}` (scripts/setup.sh does '
        f'this), or set ${NODE_MODULES_ENV} to a node_modules dir holding it')
  return d


_VIEWBOX_RE = re.compile(r'viewBox="([-\d.e]+) ([-\d.e]+) ([-\d.e]+) ([-\d.e]+)"')


def _svg_at_em(svg: str, em_px: float) -> tuple[str, int, int]:
  """Sets an SVG's width/height in px for an em of em_px (MathJax's viewBox
  is in 1/1000 em); returns (svg, width, height)."""
  m = _VIEWBOX_RE.search(svg)
  if m is None:
    raise ValueError('MathJax SVG without a viewBox')
  w = max(1, int(np.ceil(float(m.group(3)) / 1000 * em_px)))
  h = max(1, int(np.ceil(float(m.group(4)) / 1000 * em_px)))
  head_end = svg.index('>')
  head = re.sub(r'\s(width|height)="[^"]*"', '', svg[:head_end])
  head = head.replace('<svg', f'<svg width="{w}px" height="{h}px"', 1)
  return head + svg[head_end:], w, h


def _rasterize_svg(svg: str, em_px: float) -> Glyphs:
  try:
    svg, _, _ = _svg_at_em(svg, em_px)
    r = subprocess.run(['rsvg-convert', '-f', 'png', '-b', 'white'],
                       input=svg.encode('utf-8'), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60, check=False)
    if r.returncode != 0:
      return Glyphs(None, em_px, 'rsvg-convert: ' +
                    r.stderr.decode('utf-8', 'replace').strip()[:300])
    gray = np.asarray(Image.open(io.BytesIO(r.stdout)).convert('L'))
  except (ValueError, OSError, subprocess.TimeoutExpired) as e:
    return Glyphs(None, em_px, f'rasterize: {e}')
  return _cropped(gray, em_px)


def mathjax_svgs(formulas: Sequence[str], displays: Sequence[bool]
                 ) -> list[tuple[str | None, str | None]]:
  """(svg, error) per formula from one node process running MathJax."""
  node_dir = _node_modules()
  lines = ''.join(json.dumps({'tex': tex.repair_formula(f or ''), 'display': d})
                  + '\n' for f, d in zip(formulas, displays))
  env = dict(os.environ, NODE_PATH=node_dir)
  r = subprocess.run(['node', MATHJAX_SCRIPT], input=lines.encode('utf-8'),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                     timeout=60 + 2 * len(formulas), check=False)
  if r.returncode != 0:
    msg = r.stderr.decode('utf-8', 'replace').strip().splitlines()
    raise RuntimeError('node mathjax_svg.js failed: ' + (msg[-1] if msg else
                                                         f'exit {r.returncode}'))
  recs = [json.loads(x) for x in r.stdout.decode('utf-8').splitlines() if x]
  if len(recs) != len(formulas):
    raise RuntimeError(f'mathjax_svg.js answered {len(recs)} of '
                       f'{len(formulas)} formulas')
  return [(rec.get('svg'), rec.get('error')) for rec in recs]


def _render_mathjax(formulas, specs, workers) -> list[Glyphs]:
  svgs = mathjax_svgs(formulas, [s.get('style', 'display') == 'display'
                                 for s in specs])

  def one(args):
    (svg, err), spec = args
    em = em_px_of(spec)
    if err is not None or svg is None:
      return Glyphs(None, em, 'mathjax: ' + str(err)[:300])
    return _rasterize_svg(svg, em)

  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    return list(pool.map(one, zip(svgs, specs)))

