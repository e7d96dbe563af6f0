"""Online image augmentation as TensorFlow ops, for tf.data `map`.

Every op is stateless (`tf.random.stateless_*`, `tf.image.stateless_*`): the
output is a function of the image and a [2] seed only, so an input pipeline
that derives the seed from (epoch, example index) is reproducible and needs no
checkpointed RNG state.

The canvas (the bucket) never changes shape; the formula moves, turns and
rescales inside it and is kept inside it. Each transform has its own config
group with `enabled` and `prob` (the chance it is applied to one example):

  ds = ds.map(lambda ex, seed: {**ex, 'image': augment(ex['image'], seed, cfg)})

The fields are in the config schema (TF-free, so configs build without TF):
`defaults.augment_config()` has every transform off (the identity),
`defaults.robust_augment_config()` turns on a preset for screenshots and scans.
"""

from __future__ import annotations

import math

import ml_collections
import tensorflow as tf

# The groups of `defaults.augment_config()`, in the order they are applied:
# geometry first (on the clean image), then optics (blur), then the capture device
# (binarization, paper/background level, sensor noise, JPEG).
_STAGES = ('geometry', 'blur', 'binarize', 'background', 'noise', 'jpeg')


def _uniform(seed, lo, hi):
  return tf.random.stateless_uniform([], seed, minval=lo, maxval=hi,
                                     dtype=tf.float32)


def _maybe(seed, prob, fn, x):
  """fn(x) with probability prob, else x."""
  apply = tf.random.stateless_uniform([], seed) < prob
  return tf.cond(apply, lambda: fn(x), lambda: x)


def _ink_bbox(ink):
  """(empty, y0, x0, y1, x1), float32, of pixels with ink > 0.1."""
  mask = ink[..., 0] > 0.1
  h = tf.cast(tf.shape(ink)[0], tf.float32)
  w = tf.cast(tf.shape(ink)[1], tf.float32)
  rows = tf.cast(tf.where(tf.reduce_any(mask, 1))[:, 0], tf.float32)
  cols = tf.cast(tf.where(tf.reduce_any(mask, 0))[:, 0], tf.float32)
  empty = tf.equal(tf.size(rows), 0)
  # The sentinels only matter (and are replaced) when there is no ink.
  y0 = tf.reduce_min(tf.concat([rows, [h]], 0))
  x0 = tf.reduce_min(tf.concat([cols, [w]], 0))
  y1 = tf.reduce_max(tf.concat([rows, [-1.]], 0)) + 1
  x1 = tf.reduce_max(tf.concat([cols, [-1.]], 0)) + 1
  return (empty, tf.where(empty, 0., y0), tf.where(empty, 0., x0),
          tf.where(empty, h, y1), tf.where(empty, w, x1))


def _geometry(ink, seed, g):
  """Scale, rotate and translate the ink, keeping it inside the canvas."""
  s_seed, r_seed, ty_seed, tx_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  h = tf.cast(tf.shape(ink)[0], tf.float32)
  w = tf.cast(tf.shape(ink)[1], tf.float32)
  empty, y0, x0, y1, x1 = _ink_bbox(ink)
  cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
  hh, hw = (y1 - y0) / 2, (x1 - x0) / 2
  theta = _uniform(r_seed, -g.rotate_deg, g.rotate_deg + 1e-6) * (
      math.pi / 180)
  cos, sin = tf.cos(theta), tf.sin(theta)
  scale = _uniform(s_seed, 1.0 - g.scale, 1.0 + g.scale + 1e-6)
  # Half extents of the turned box at unit scale; cap the scale so it fits.
  ext_y = tf.abs(sin) * hw + tf.abs(cos) * hh
  ext_x = tf.abs(cos) * hw + tf.abs(sin) * hh
  room_y = h / 2 - g.margin
  room_x = w / 2 - g.margin
  scale = tf.minimum(scale, tf.minimum(room_y / tf.maximum(ext_y, 1.),
                                       room_x / tf.maximum(ext_x, 1.)))
  scale = tf.maximum(scale, 0.1)
  ext_y, ext_x = scale * ext_y, scale * ext_x
  # Translate from the original centre, then clip into the allowed range.
  t = float(g.translate_px)
  ny = cy + _uniform(ty_seed, -t, t + 1e-6)
  nx = cx + _uniform(tx_seed, -t, t + 1e-6)
  lo_y, hi_y = g.margin + ext_y, h - g.margin - ext_y
  lo_x, hi_x = g.margin + ext_x, w - g.margin - ext_x
  ny = tf.where(lo_y <= hi_y, tf.clip_by_value(ny, lo_y, hi_y), h / 2)
  nx = tf.where(lo_x <= hi_x, tf.clip_by_value(nx, lo_x, hi_x), w / 2)
  # Output pixel p maps to input c + A^-1 (p - n), A = scale * R(theta);
  # pixel centres are at +0.5.
  inv = 1.0 / scale
  a0, a1 = inv * cos, inv * sin
  b0, b1 = -inv * sin, inv * cos
  ox, oy = nx - 0.5, ny - 0.5
  a2 = cx - 0.5 - a0 * ox - a1 * oy
  b2 = cy - 0.5 - b0 * ox - b1 * oy
  transform = tf.stack([a0, a1, a2, b0, b1, b2, 0., 0.])[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=ink[None], transforms=transform,
      output_shape=tf.shape(ink)[:2], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='CONSTANT')[0]
  return tf.where(empty, ink, out)


def _gaussian_kernel(sigma, taps=7):
  x = tf.range(taps, dtype=tf.float32) - (taps - 1) / 2
  k = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
  return k / tf.reduce_sum(k)


def _blur(ink, seed, b):
  k = _gaussian_kernel(_uniform(seed, 0.0, b.sigma_max + 1e-6))
  x = ink[None]
  x = tf.nn.conv2d(x, tf.reshape(k, [-1, 1, 1, 1]), 1, 'SAME')
  x = tf.nn.conv2d(x, tf.reshape(k, [1, -1, 1, 1]), 1, 'SAME')
  return x[0]


def augment(image: tf.Tensor, seed: tf.Tensor,
            cfg: ml_collections.ConfigDict) -> tf.Tensor:
  """Augments one formula image.

  Args:
    image: uint8 [H, W, 1], dark ink on white, as the input pipeline reads it.
    seed: int32 or int64 [2], the stateless seed of this example.
    cfg: `defaults.augment_config()`-shaped; disabled groups cost nothing.

  Returns:
    uint8 [H, W, 1], the same shape as `image`.
  """
  image = tf.convert_to_tensor(image)
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
  seeds = tf.unstack(tf.random.experimental.stateless_split(
      seed, 2 * len(_STAGES)))
  # Work in "ink" units, 0 = paper, 1 = full ink, so padding adds paper.
  ink = 1.0 - tf.cast(image, tf.float32) / 255.0
  for i, stage in enumerate(_STAGES):
    c = cfg[stage]
    if not c.enabled:
      continue
    apply_seed, op_seed = seeds[2 * i], seeds[2 * i + 1]
    if stage == 'geometry':
      fn = lambda x, c=c, s=op_seed: _geometry(x, s, c)
    elif stage == 'blur':
      fn = lambda x, c=c, s=op_seed: _blur(x, s, c)
    elif stage == 'binarize':
      fn = lambda x, c=c, s=op_seed: tf.cast(
          x > 1.0 - _uniform(s, c.threshold_low, c.threshold_high + 1e-6)
          / 255.0, tf.float32)
    elif stage == 'background':
      def fn(x, c=c, s=op_seed):
        bs, is_ = tf.unstack(tf.random.experimental.stateless_split(s, 2))
        paper = _uniform(bs, c.min_level, 255.0 + 1e-6) / 255.0
        ink_level = _uniform(is_, 0.0, c.max_ink_level + 1e-6) / 255.0
        # Back to ink units where paper is `paper` gray, ink `ink_level`.
        return (1.0 - paper) + x * (paper - ink_level)
    elif stage == 'noise':
      def fn(x, c=c, s=op_seed):
        ss, ns = tf.unstack(tf.random.experimental.stateless_split(s, 2))
        std = _uniform(ss, 0.0, c.std_max + 1e-6) / 255.0
        return x + std * tf.random.stateless_normal(tf.shape(x), ns)
    elif stage == 'jpeg':
      def fn(x, c=c, s=op_seed):
        img = tf.cast(tf.round(255.0 * (1.0 - tf.clip_by_value(x, 0., 1.))),
                      tf.uint8)
        img = tf.image.stateless_random_jpeg_quality(
            img, c.min_quality, c.max_quality, s)
        return 1.0 - tf.cast(img, tf.float32) / 255.0
    ink = tf.clip_by_value(_maybe(apply_seed, c.prob, fn, ink), 0.0, 1.0)
  out = tf.cast(tf.round(255.0 * (1.0 - ink)), tf.uint8)
  return tf.ensure_shape(tf.reshape(out, tf.shape(image)), image.shape)
