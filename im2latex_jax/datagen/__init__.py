"""Training data beyond the dataset: pdflatex rendering in the dataset's style
(`render`), screenshot renderers (`engines`: pdflatex fonts, KaTeX, MathJax),
their looks (`presentation`), the `render-screens` command (`screens`) and new
formulas (`formula_gen`). Online augmentation is a data op: data/augment.py."""
