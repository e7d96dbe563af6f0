r"""Fine-tunes a model (default: the shipped one) on real + screenshot-like renders.

The recipe of issue "Read real screenshots (3/3)", sized for a 2-core CPU
session: start from the parameters of `config.init_from` (its vocabulary and
network), a fresh Adam at a lower learning rate, and train on the real data
plus formulas drawn by every renderer of im2latex_jax/datagen (pdflatex in six
math font families, KaTeX, MathJax) with random presentations, stored at the
dataset's glyph size. A light online scale jitter (±10 %) teaches tolerance
to the glyph-size search's residual error. Model selection on the clean
validation[7475:] loss, so the best checkpoint is the one that keeps v1's
reading of dataset images.

  D=../shared/data/im2latex100k W=/tmp/v2data
  bash scripts/make_screen_data.sh $D $W/screens 5000 0        # real formulas
  im2latex-jax gen-formulas --formulas $D/im2latex_formulas.norm.lst \
      --split-list $D/im2latex_train_filter.lst --split-list val_first7475.lst \
      --n 12000 --seed 1 --out $W/gen.lst                       # new formulas
  # each renderer draws a third of them (render-screens --seed 1, see MODEL_CARD)
  im2latex-jax merge-data --out $W/mixed --add $D --add $W/screens/pdflatex:train ...
  im2latex-jax train --config configs/screens.py --workdir workdirs/screens \
      --config.input.manual_dir=$W/mixed
"""

import os

import im2latex_jax
from im2latex_jax import defaults


def get_config(arg=None):
  c = defaults.sibling_config(__file__, "shipped", arg)
  c.init_from = os.path.join(os.path.dirname(im2latex_jax.__file__), "assets", "model")
  c.input.batch_size = 32
  c.input.eval_batch_size = 64
  c.input.augment.enabled = True
  c.input.augment.geometry.enabled = True
  c.input.augment.geometry.prob = 0.5
  c.input.augment.geometry.scale = 0.10
  c.input.augment.geometry.translate_px = 8

  c.optim.lr = 3e-4
  c.optim.warmup_steps = 100
  c.optim.plateau.patience = 3

  c.num_train_steps = 4000
  c.log_every_steps = 50
  c.eval_every_steps = 250
  return c
