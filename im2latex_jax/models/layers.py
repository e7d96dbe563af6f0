"""Pieces shared by the models: input normalisation, masks, attention, init."""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections


def max_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """Non-overlapping VALID max pooling as a reshape + max.

  Same values as `nn.max_pool(x, window, window)`, but its gradient is a
  compare-and-select that XLA fuses, where `nn.max_pool`'s is a
  select_and_scatter that ran ~3x slower on CPU (0.54 s vs 0.16 s for the
  first pool of a 32x50x200 batch, forward + backward; BENCHMARKS.md).
  """
  b, h, w, c = x.shape
  wh, ww = window
  h2, w2 = h // wh, w // ww
  x = x[:, :h2 * wh, :w2 * ww]
  return x.reshape(b, h2, wh, w2, ww, c).max(axis=(2, 4))


def normalize_images(images: jax.Array, image_hw: jax.Array, dtype) -> jax.Array:
  """uint8-range [B, H, W, 1] -> (x - 128) / 128, white beyond each image's hw.

  Whitening the padding here makes the model's output independent of what a
  pipeline put into the padded area.
  """
  _, h, w, _ = images.shape
  rows = jnp.arange(h)[None, :, None] < image_hw[:, 0, None, None]
  cols = jnp.arange(w)[None, None, :] < image_hw[:, 1, None, None]
  valid = (rows & cols)[..., None]
  x = jnp.where(valid, images.astype(jnp.float32), 255.0)
  return ((x - 128.0) / 128.0).astype(dtype)


def feature_mask(image_hw: jax.Array, feature_hw: tuple[int, int],
                 image_shape: tuple[int, int]) -> jax.Array:
  """[B, H', W'] True where a feature cell overlaps the unpadded image."""
  fh, fw = feature_hw
  ih, iw = image_shape
  # A cell covers ih/fh image rows; it is valid if it starts inside the image.
  rows = jnp.arange(fh)[None, :, None] * ih < image_hw[:, 0, None, None] * fh
  cols = jnp.arange(fw)[None, None, :] * iw < image_hw[:, 1, None, None] * fw
  return rows & cols


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  return jax.nn.softmax(scores.astype(jnp.float32), axis=-1)


def apply_init_scheme(params, cfg: ml_collections.ConfigDict, rng: jax.Array):
  """Re-initialises parameters after `init` according to cfg.init.

  - 'uniform': im2markup's U[-s, s] for every weight (normalisation scale
    and bias keep their 1/0 so the normalisation starts as the identity);
  - 'conv_he': the seed's change, He-normal conv kernels only;
  - 'default': Flax's initialisers.
  """
  if cfg.init == "default":
    return params
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  keys = jax.random.split(rng, len(flat))
  out = {}
  for (path, value), key in zip(sorted(flat.items()), keys):
    # Normalisation layers (BatchNorm, LayerNorm) keep their 1/0 init.
    is_bn = any("Norm" in p or p.startswith(("bn", "ln", "norm")) for p in path)
    is_conv = value.ndim == 4 and path[-1] == "kernel"
    if cfg.init == "uniform" and not is_bn:
      value = jax.random.uniform(key, value.shape, value.dtype, -cfg.init_scale, cfg.init_scale)
    elif cfg.init == "conv_he" and is_conv:
      value = nn.initializers.he_normal()(key, value.shape, value.dtype)
    elif cfg.init not in ("uniform", "conv_he"):
      raise ValueError(f"Unknown config.model.init {cfg.init!r}; use 'uniform', 'conv_he' or 'default'.")
    out[path] = value
  return flax.traverse_util.unflatten_dict(out)
