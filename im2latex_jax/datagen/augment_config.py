"""Augmentation config fields (TF-free; the ops are in augment.py).

`default_config()` has every transform off; `robust_config()` is the preset
for models that must read screenshots, photos and scans. `enabled` at the top
switches the whole augmentation in the input pipeline.
"""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """All augmentation fields, every transform disabled."""
  c = ml_collections.ConfigDict()
  # Master switch: the input pipeline augments training images only if set.
  c.enabled = False
  c.geometry = ml_collections.ConfigDict()
  c.geometry.enabled = False
  # Chance of applying the geometric transform to one example.
  c.geometry.prob = 1.0
  # Max relative scale change: the factor is uniform in [1 - s, 1 + s]; it is
  # lowered when the scaled formula would not fit in the canvas.
  c.geometry.scale = 0.0
  # Max rotation, degrees, uniform in [-r, r].
  c.geometry.rotate_deg = 0.0
  # Max translation of the formula, px, uniform in [-t, t] per axis, then
  # clipped so the ink stays `margin` px away from the canvas border.
  c.geometry.translate_px = 0
  # Min distance between the ink and the canvas border, px (the dataset's is 4).
  c.geometry.margin = 2

  c.blur = ml_collections.ConfigDict()
  c.blur.enabled = False
  c.blur.prob = 0.5
  # Gaussian blur sigma, px, uniform in [0, sigma_max] (kernel: 7 taps).
  c.blur.sigma_max = 0.0

  c.binarize = ml_collections.ConfigDict()
  c.binarize.enabled = False
  c.binarize.prob = 0.2
  # Threshold on the 0..255 scale, uniform in [low, high].
  c.binarize.threshold_low = 100
  c.binarize.threshold_high = 180

  c.background = ml_collections.ConfigDict()
  c.background.enabled = False
  c.background.prob = 0.5
  # Background (paper) gray level, uniform in [min_level, 255].
  c.background.min_level = 255
  # Ink gray level, uniform in [0, max_ink_level].
  c.background.max_ink_level = 0

  c.noise = ml_collections.ConfigDict()
  c.noise.enabled = False
  c.noise.prob = 0.5
  # Gaussian noise std on the 0..255 scale, uniform in [0, std_max].
  c.noise.std_max = 0.0

  c.jpeg = ml_collections.ConfigDict()
  c.jpeg.enabled = False
  c.jpeg.prob = 0.3
  # JPEG quality, uniform integer in [min_quality, max_quality].
  c.jpeg.min_quality = 30
  c.jpeg.max_quality = 95
  return c


def robust_config() -> ml_collections.ConfigDict:
  """A preset for models that must read screenshots, photos and scans."""
  c = default_config()
  c.enabled = True
  c.geometry.enabled = True
  c.geometry.scale = 0.15
  c.geometry.rotate_deg = 1.5
  c.geometry.translate_px = 16
  c.blur.enabled = True
  c.blur.sigma_max = 0.8
  c.binarize.enabled = True
  c.background.enabled = True
  c.background.min_level = 190
  c.background.max_ink_level = 70
  c.noise.enabled = True
  c.noise.std_max = 12.0
  c.jpeg.enabled = True
  return c
