"""Training data beyond the dataset: pdflatex rendering in the dataset's style
(`render`), screenshot renderers (`engines`: pdflatex fonts, KaTeX, MathJax),
their looks (`presentation`), the `render-screens` command (`screens`), new
formulas (`formula_gen`) and online augmentation (`augment`; its config fields
are in defaults.augment_config)."""
