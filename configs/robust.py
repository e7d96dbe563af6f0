r"""im2markup with online augmentation, for images that are not dataset renders.

The seed's variant (momentum, plateau) plus the robust augmentation preset
(defaults.robust_augment_config): scale, small rotation, translation, blur,
binarization, background level, noise and JPEG-like degradation. Batches
still land on the configured bucket shapes.

  im2latex-jax train --config configs/robust.py:reduced \
      --config.input.manual_dir=../shared/data/im2latex100k --workdir workdirs/robust
"""

from im2latex_jax import defaults


def get_config(arg=None):
  c = defaults.sibling_config(__file__, "seed", arg)
  c.input.augment = defaults.robust_augment_config()
  return c
