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


CONV_IMPLS = ("auto", "xla", "im2col")


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, precision=None, **kw):
  """`lax.conv_general_dilated` for NHWC x HWIO, stride 1, as one matmul.

  The k_h*k_w shifted views of the padded input are concatenated along the
  channels ([B, H, W, k_h*k_w*C], im2col) and multiplied by the kernel
  reshaped to [k_h*k_w*C, O] (same (kh, kw, c) order): the same sums in
  another order (float32 differences ~1e-6 relative). XLA:CPU differentiates
  this much faster than its direct convolution (the im2markup CNN's forward +
  backward at batch 32, 50x200: 4.0-4.5 s vs 7.2 s on a 2-core AMD EPYC),
  while its forward alone is slower (the encoder at batch 1: 57 vs 52 ms;
  BENCHMARKS.md). Any other case (strides, dilation, groups, layouts) falls
  back to lax.
  """
  fallback = (tuple(window_strides) != (1, 1) or feature_group_count != 1
              or any(d not in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
              or isinstance(padding, str) or lhs.ndim != 4
              or dimension_numbers != jax.lax.conv_dimension_numbers(
                  lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
  if fallback:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, **kw)
  (pt, pb), (pl, pr) = padding
  kh, kw_, c, o = rhs.shape
  x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  b, hp, wp, _ = x.shape
  h, w = hp - kh + 1, wp - kw_ + 1
  cols = jnp.concatenate([x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw_)], -1)
  y = jnp.dot(cols.reshape(b * h * w, kh * kw_ * c), rhs.reshape(kh * kw_ * c, o),
              precision=precision)
  return y.reshape(b, h, w, o)


def conv_general_dilated(impl: str, train: bool = True):
  """The convolution of `impl`: 'xla' (lax's), 'im2col' (`im2col_conv`) or
  'auto': im2col when training on CPU (where its gradient is faster), lax's
  otherwise (inference on CPU, and cuDNN's on GPU)."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"config.model.conv_impl {impl!r} is not one of {CONV_IMPLS}.")
  if impl == "auto":
    impl = "im2col" if train and jax.default_backend() == "cpu" else "xla"
  return im2col_conv if impl == "im2col" else jax.lax.conv_general_dilated


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


LSTM_GATES = ("i", "f", "g", "o")


class LSTMWeights(nn.Module):
  """`nn.OptimizedLSTMCell`'s parameters (the same names ii..io / hi..ho,
  shapes and initializers, so checkpoints are interchangeable), returned fused
  in gate order i, f, g, o: (input kernel [D, 4H], hidden kernel [H, 4H],
  bias [4H]). The fused kernels are concatenated where this is called, so a
  caller outside a loop pays for the concatenation once, not once per step."""
  features: int
  kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
  recurrent_kernel_init: nn.initializers.Initializer = nn.initializers.orthogonal()

  @nn.compact
  def __call__(self, in_features: int):
    dense = nn.recurrent.DenseParams
    x, h = jnp.zeros((1, in_features)), jnp.zeros((1, self.features))
    wi = [dense(self.features, use_bias=False, kernel_init=self.kernel_init,
                name=f"i{g}")(x)[0] for g in LSTM_GATES]
    wh, b = zip(*[dense(self.features, use_bias=True, kernel_init=self.recurrent_kernel_init,
                        bias_init=nn.initializers.zeros_init(), name=f"h{g}")(h)
                  for g in LSTM_GATES])
    return jnp.concatenate(wi, -1), jnp.concatenate(wh, -1), jnp.concatenate(b, -1)


def lstm_gates(z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(c', h') from the pre-activations z [..., 4H] (gates i, f, g, o) and c."""
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
  return c, nn.sigmoid(o) * jnp.tanh(c)


def bidirectional_lstm(x: jax.Array, weights, carries, lengths: jax.Array,
                       dtype=jnp.float32) -> jax.Array:
  """A forward and a backward LSTM over axis 1 of x [N, T, D], in one scan.

  The same values as two `nn.RNN(nn.OptimizedLSTMCell)` (the backward one
  `reverse=True, keep_order=True`, both with `seq_lengths=lengths`: each
  sequence is reversed within its length, positions past it continue from the
  last state), computed with the input projections of all steps hoisted into
  one matmul per direction before the scan and both directions' recurrent
  matmuls batched in each step: half the sequential steps, and per step only
  the hidden kernels are read.

  Args:
    x: [N, T, D] inputs.
    weights: ((wi, wh, b), (wi, wh, b)) of the forward and backward LSTM, as
      `LSTMWeights` returns them.
    carries: ((c, h), (c, h)) initial states [N, H] of each direction.
    lengths: int [N], the valid length of each sequence.
    dtype: the computation dtype (as OptimizedLSTMCell's `dtype`).

  Returns:
    [N, T, 2H]: the forward outputs, then the backward ones.
  """
  flip = lambda a: nn.recurrent.flip_sequences(a, lengths, num_batch_dims=1, time_major=False)
  x = x.astype(dtype)
  zs = [jnp.dot(x, wi.astype(dtype)) + b.astype(dtype) for wi, _, b in weights]
  zs = jnp.stack([zs[0], flip(zs[1])])                    # [2, N, T, 4H]
  wh = jnp.stack([w[1] for w in weights]).astype(dtype)   # [2, H, 4H]
  c0 = jnp.stack([c for c, _ in carries]).astype(dtype)
  h0 = jnp.stack([h for _, h in carries]).astype(dtype)

  def step(carry, z):
    c, h = carry
    c, h = lstm_gates(z + jnp.einsum("dnh,dhk->dnk", h, wh), c)
    return (c, h), h
  _, hs = jax.lax.scan(step, (c0, h0), jnp.moveaxis(zs, 2, 0))   # [T, 2, N, H]
  hs = jnp.moveaxis(hs, 0, 2)                                       # [2, N, T, H]
  return jnp.concatenate([hs[0], flip(hs[1])], -1)
