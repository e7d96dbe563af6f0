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


CONV_IMPLS = ("auto", "xla", "im2col", "winograd")


def _is_plain_nhwc_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                        dimension_numbers, feature_group_count) -> bool:
  """Stride 1, no dilation or groups, explicit padding, NHWC x HWIO."""
  return (tuple(window_strides) == (1, 1) and feature_group_count == 1
          and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
          and not isinstance(padding, str) and lhs.ndim == 4
          and dimension_numbers == jax.lax.conv_dimension_numbers(
              lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))


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
  if not _is_plain_nhwc_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                            dimension_numbers, feature_group_count):
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


# Winograd F(2x2, 3x3) (Lavin & Gray 2016): B^T (input), G (kernel), A^T (output).
# Below this many input channels the transforms cost more than the products
# they save: the im2markup CNN's 64 -> 128 layer (batch 32, 25x100) trains
# 0.38 s/step as im2col, 0.49 s as Winograd on 2 AMD EPYC (Zen 4) cores; its
# wider layers 20-30 % faster as Winograd (BENCHMARKS.md).
WINOGRAD_MIN_CHANNELS = 128
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def _winograd_bt(d):
  """B^T d for a list of 4 equally shaped arrays (rows of a 4-tile)."""
  return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _winograd_at(m):
  """A^T m for a list of 4 arrays: the 2 output rows."""
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def winograd_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                  dimension_numbers=None, feature_group_count=1, precision=None, **kw):
  """`lax.conv_general_dilated` for a 3x3 NHWC x HWIO kernel, stride 1, as
  Winograd's F(2x2, 3x3): each 2x2 output tile from its 4x4 input tile with
  16 products per (channel, filter) instead of 36.

  The output is cut into 2x2 tiles (padded up to even sizes, then cropped);
  the 16 transformed input planes (B^T d B, [B * tiles, C] each) are
  multiplied by the 16 transformed kernels (G g G^T, [C, O]) in one batched
  matmul, and A^T m A assembles the tiles. Its gradient, by autodiff, is the
  same construction transposed, so the backward pass saves the same 2.25x of
  multiply-adds as the forward. Same sums in another order: float32
  differences ~1e-6 relative (the transforms are exact in binary but for the
  halves of G). Other kernels, strides, dilation, groups, layouts and inputs
  of fewer than WINOGRAD_MIN_CHANNELS channels go to `im2col_conv`.
  """
  args = (window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count)
  if (not _is_plain_nhwc_conv(lhs, rhs, *args) or tuple(rhs.shape[:2]) != (3, 3)
      or rhs.shape[2] < WINOGRAD_MIN_CHANNELS):
    return im2col_conv(lhs, rhs, *args, precision=precision, **kw)
  (pt, pb), (pl, pr) = padding
  b, h, w, c = lhs.shape
  o = rhs.shape[3]
  ho, wo = h + pt + pb - 2, w + pl + pr - 2
  ty, tx = -(-ho // 2), -(-wo // 2)
  x = jnp.pad(lhs, ((0, 0), (pt, pb + 2 * ty - ho), (pl, pr + 2 * tx - wo), (0, 0)))
  # d[i][j]: element (i, j) of every 4x4 input tile, [B, ty, tx, C].
  # Through 2x2 blocks ([B, ty + 1, 2, tx + 1, 2, C]): unit-stride slices,
  # which XLA:CPU fuses and differentiates faster than stride-2 ones.
  xb = x.reshape(b, ty + 1, 2, tx + 1, 2, c)
  d = [[xb[:, i // 2:i // 2 + ty, i % 2, j // 2:j // 2 + tx, j % 2, :] for j in range(4)]
       for i in range(4)]
  cols = [_winograd_bt([d[i][j] for i in range(4)]) for j in range(4)]  # (B^T d)[a, j]
  v = [_winograd_bt([cols[j][a_] for j in range(4)]) for a_ in range(4)]  # (B^T d B)[a, b]
  v = jnp.stack([v[a_][b_] for a_ in range(4) for b_ in range(4)]).reshape(16, b * ty * tx, c)
  g = jnp.asarray(_WINOGRAD_G, rhs.dtype)
  u = jnp.einsum("ai,ijco,bj->abco", g, rhs, g, precision=precision).reshape(16, c, o)
  m = jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))), precision=precision)
  m = m.reshape(4, 4, b, ty, tx, o)
  cols = [_winograd_at([m[a_, b_] for a_ in range(4)]) for b_ in range(4)]  # (A^T m)[p, b]
  y = [_winograd_at([cols[b_][p] for b_ in range(4)]) for p in range(2)]  # (A^T m A)[p, q]
  y = jnp.stack([jnp.stack(y[0], 3), jnp.stack(y[1], 3)], 2)  # [B, ty, 2, tx, 2, O]
  return y.reshape(b, 2 * ty, 2 * tx, o)[:, :ho, :wo]


def conv_general_dilated(impl: str, train: bool = True):
  """The convolution of `impl`: 'xla' (lax's), 'im2col' (`im2col_conv`),
  'winograd' (`winograd_conv`: 3x3 kernels of >= WINOGRAD_MIN_CHANNELS
  inputs, im2col for the rest) or 'auto': winograd when training on CPU
  (where its gradient is the fastest), lax's otherwise (inference on CPU,
  where lax's forward is faster at batch 1, and cuDNN's on GPU)."""
  impl = resolve_conv_impl(impl, train)
  return {"im2col": im2col_conv, "winograd": winograd_conv}.get(impl, jax.lax.conv_general_dilated)


def resolve_conv_impl(impl: str, train: bool = True) -> str:
  """The implementation `conv_general_dilated(impl, train)` runs: 'auto'
  resolved to 'winograd' or 'xla' for this backend; others as given."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"config.model.conv_impl {impl!r} is not one of {CONV_IMPLS}.")
  if impl == "auto":
    return "winograd" if train and jax.default_backend() == "cpu" else "xla"
  return impl


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
