r"""im2markup with online augmentation, for images that are not dataset renders.

The seed's variant (momentum, plateau) plus the robust augmentation preset
(im2latex_jax/datagen/augment_config.py): scale, small rotation, translation, blur,
binarization, background level, noise and JPEG-like degradation. Batches
still land on the configured bucket shapes.

  im2latex-jax train --config configs/robust.py:reduced \
      --config.input.manual_dir=../shared/data/im2latex100k --workdir workdirs/robust
"""

from im2latex_jax.datagen import augment_config
from im2latex_jax import defaults


def get_config(arg=None):
  c = defaults.sibling_config(__file__, "seed", arg)
  c.input.augment = augment_config.robust_config()
  return c
