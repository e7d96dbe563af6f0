r"""im2markup with online augmentation, for images that are not dataset renders.

The seed's variant (momentum, plateau) plus the robust augmentation preset
(im2latex_jax/augment_config.py): scale, small rotation, translation, blur,
binarization, background level, noise and JPEG-like degradation. Batches
still land on the configured bucket shapes.

  im2latex-jax train --config configs/robust.py:reduced \
      --config.input.manual_dir=../shared/data/im2latex100k --workdir workdirs/robust
"""

import importlib.util
import os

from im2latex_jax import augment_config


def _load_sibling(name):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"im2latex_configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  c = _load_sibling("seed").get_config(arg)
  c.input.augment = augment_config.robust_config()
  return c
