// MathJax (npm mathjax-full 3) TeX -> SVG, one JSON object per line.
//   stdin:  {"tex": "...", "display": true}
//   stdout: {"svg": "<svg ...>"}  or  {"error": "..."}   (same order)
// Run with NODE_PATH pointing at the node_modules dir holding mathjax-full
// (im2latex_jax/datagen/engines.py does). A TeX error is reported for that
// formula only; MathJax's own red error box is never drawn.
'use strict';
const readline = require('readline');
const {mathjax} = require('mathjax-full/js/mathjax.js');
const {TeX} = require('mathjax-full/js/input/tex.js');
const {SVG} = require('mathjax-full/js/output/svg.js');
const {liteAdaptor} = require('mathjax-full/js/adaptors/liteAdaptor.js');
const {RegisterHTMLHandler} = require('mathjax-full/js/handlers/html.js');
const {AllPackages} = require('mathjax-full/js/input/tex/AllPackages.js');

const adaptor = liteAdaptor();
RegisterHTMLHandler(adaptor);
const tex = new TeX({
  packages: AllPackages.filter((p) => p !== 'bussproofs'),
  macros: {
    mymatrix: ['\\begin{matrix}#1\\end{matrix}', 1],
    mypmatrix: ['\\begin{pmatrix}#1\\end{pmatrix}', 1],
    mycases: ['\\begin{cases}#1\\end{cases}', 1],
  },
  formatError: (jax, err) => { throw err; },
});
// fontCache 'none': every glyph is a path in place, so each SVG stands alone.
const svg = new SVG({fontCache: 'none'});
const doc = mathjax.document('', {InputJax: tex, OutputJax: svg});

const rl = readline.createInterface({input: process.stdin, terminal: false});
rl.on('line', (line) => {
  if (!line.trim()) return;
  let out;
  try {
    const item = JSON.parse(line);
    const node = doc.convert(item.tex, {display: !!item.display, em: 16, ex: 8,
                                        containerWidth: 1e6});
    const s = adaptor.innerHTML(node);
    out = s.includes('data-mjx-error') ? {error: 'TeX error'} : {svg: s};
  } catch (e) {
    out = {error: String((e && e.message) || e).split('\n')[0]};
  }
  process.stdout.write(JSON.stringify(out) + '\n');
});
