"""ResNet encoder with 2-D positional encoding and a Transformer decoder.

The "modern" im2latex recipe the seed project listed as future work: a small
ResNet turns the image into an H/8 × W/8 grid (the same reduction as
im2markup, so `layers.feature_mask` marks the same valid cells), a 2-D
sinusoidal encoding tells every cell its row and column (half the channels
each), optional Transformer encoder layers mix the cells, and a pre-LN
Transformer decoder reads the formula with causal self-attention and masked
cross-attention over the cells.

Incremental decoding keeps a per-layer key/value cache in the carry
(`[B, layers, max_len, heads, head_dim]`) and a position counter `[B]`, so
every carry leaf has the batch as its leading dimension and beam search can
flatten and gather it like any other carry. The cross-attention keys and
values of the memory are computed once in `encode` (leaves
`[B, layers, N, heads, head_dim]`), not at every step.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from im2latex_jax.models import layers

Carry = dict[str, jax.Array]
Enc = dict[str, jax.Array]

# Wavelength base of the sinusoidal encodings (Vaswani et al. 2017).
MAX_TIMESCALE = 10_000.0


def sinusoid_table(length: int, dim: int) -> np.ndarray:
  """[length, dim] float32: sin in the first half of channels, cos in the second."""
  if dim % 2:
    raise ValueError(f"sinusoidal encoding needs an even width, got {dim}.")
  half = dim // 2
  inv_freq = np.exp(-math.log(MAX_TIMESCALE) * np.arange(half) / max(half, 1))
  angles = np.arange(length)[:, None] * inv_freq[None, :]        # [length, half]
  return np.concatenate([np.sin(angles), np.cos(angles)], -1).astype(np.float32)


def positional_encoding_2d(fh: int, fw: int, dim: int) -> np.ndarray:
  """[fh, fw, dim]: rows in the first dim/2 channels, columns in the rest."""
  if dim % 4:
    raise ValueError(f"2-D sinusoidal encoding needs d_model divisible by 4, got {dim}; "
                     "set config.model.d_model to a multiple of 4.")
  rows = sinusoid_table(fh, dim // 2)                            # [fh, dim/2]
  cols = sinusoid_table(fw, dim // 2)                            # [fw, dim/2]
  return np.concatenate([np.broadcast_to(rows[:, None], (fh, fw, dim // 2)),
                         np.broadcast_to(cols[None, :], (fh, fw, dim // 2))], -1)


# ----------------------------------------------------------------------------- encoder


class ResidualBlock(nn.Module):
  """Two 3×3 convs with BatchNorm; a 1×1 projection when channels change."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=1, use_bias=False,
                             dtype=self.dtype)
    bn = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, dtype=self.dtype)
    residual = x
    y = nn.relu(bn(name="bn1")(conv(self.features, name="conv1")(x)))
    # The last BatchNorm of the branch starts at zero so every block starts
    # as the identity (Goyal et al. 2017), which keeps deep stacks trainable.
    y = bn(name="bn2", scale_init=nn.initializers.zeros)(conv(self.features, name="conv2")(y))
    if residual.shape[-1] != self.features:
      residual = bn(name="bn_proj")(
          nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="proj")(residual))
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """Stem conv + three stages of residual blocks; H, W reduced by exactly 8.

  Downsampling is a 2×2 max pool before each stage (floor division, as
  im2markup's pools), so the feature grid of an (H, W) image is
  (H // 8, W // 8) and `layers.feature_mask` applies unchanged.
  """
  features: tuple[int, ...] = (64, 128, 256)
  blocks: tuple[int, ...] = (2, 2, 2)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if len(self.features) != 3 or len(self.blocks) != 3:
      raise ValueError(
          f"config.model.resnet_features {self.features} and resnet_blocks {self.blocks} "
          "need 3 entries each (one per stage; each stage halves H and W).")
    x = nn.Conv(self.features[0], (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                name="stem")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, name="bn_stem")(x))
    for s, (f, n) in enumerate(zip(self.features, self.blocks)):
      x = layers.max_pool(x, (2, 2))
      for i in range(n):
        x = ResidualBlock(f, dtype=self.dtype, name=f"stage{s}_block{i}")(x, train)
    return x


# ----------------------------------------------------------------------------- attention


class Attention(nn.Module):
  """Multi-head dot-product attention with keys/values projected separately.

  `project_kv` and `attend` are separate so the decoder can cache keys and
  values (self-attention) or compute them once per image (cross-attention).
  """
  num_heads: int
  d_model: int
  dtype: Any = jnp.float32

  def setup(self):
    if self.d_model % self.num_heads:
      raise ValueError(f"d_model {self.d_model} is not divisible by num_heads "
                       f"{self.num_heads}; change config.model.num_heads or d_model.")
    head_dim = self.d_model // self.num_heads
    dense = functools.partial(nn.DenseGeneral, features=(self.num_heads, head_dim),
                              dtype=self.dtype)
    self.query, self.key, self.value = dense(), dense(), dense()
    self.out = nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=self.dtype)

  def project_kv(self, x):
    """[B, S, D] -> keys, values [B, S, heads, head_dim]."""
    return self.key(x), self.value(x)

  def attend(self, x, k, v, mask):
    """x [B, T, D] attends over k, v [B, S, H, Dh]; mask broadcasts to [B, H, T, S].

    Returns (output [B, T, D], weights float32 [B, H, T, S]).
    """
    q = self.query(x)
    q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    scores = jnp.einsum("bthd,bshd->bhts", q, k)
    weights = layers.masked_softmax(scores, mask)
    out = jnp.einsum("bhts,bshd->bthd", weights.astype(self.dtype), v)
    return self.out(out), weights


class MLP(nn.Module):
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(x))
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class EncoderLayer(nn.Module):
  """Pre-LN self-attention over the feature cells (padding cells masked as keys)."""
  num_heads: int
  d_model: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    attn = Attention(self.num_heads, self.d_model, dtype=self.dtype, name="attn")
    h = nn.LayerNorm(dtype=self.dtype, name="ln1")(x)
    k, v = attn.project_kv(h)
    y, _ = attn.attend(h, k, v, mask[:, None, None, :])
    x = x + drop(y)
    y = MLP(self.mlp_dim, self.dropout, dtype=self.dtype, name="mlp")(
        nn.LayerNorm(dtype=self.dtype, name="ln2")(x), train)
    return x + drop(y)


# ----------------------------------------------------------------------------- decoder


class DecoderLayer(nn.Module):
  """Pre-LN: causal self-attention, cross-attention, MLP; each residual."""
  num_heads: int
  d_model: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    self.ln1 = nn.LayerNorm(dtype=self.dtype)
    self.self_attn = Attention(self.num_heads, self.d_model, dtype=self.dtype)
    self.ln2 = nn.LayerNorm(dtype=self.dtype)
    self.cross_attn = Attention(self.num_heads, self.d_model, dtype=self.dtype)
    self.ln3 = nn.LayerNorm(dtype=self.dtype)
    self.mlp = MLP(self.mlp_dim, self.dropout, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def cross_kv(self, memory):
    """memory [B, N, D] -> cross-attention keys, values [B, N, H, Dh]."""
    return self.cross_attn.project_kv(memory)

  def __call__(self, x, cross_k, cross_v, cross_mask, train: bool, cache=None, pos=None):
    """x [B, T, D]. Without `cache`: teacher forcing over T with a causal mask.

    With `cache` = (keys, values) [B, max_len, H, Dh] and `pos` [B] (T = 1):
    writes this token's key/value at `pos` and attends to positions <= pos.
    Returns (x, cache, cross-attention weights [B, H, T, N]).
    """
    h = self.ln1(x)
    k, v = self.self_attn.project_kv(h)
    if cache is None:
      t = x.shape[1]
      mask = (jnp.arange(t)[None, :] <= jnp.arange(t)[:, None])[None, None]  # [1, 1, T, T]
    else:
      cache_k, cache_v = cache
      here = (jnp.arange(cache_k.shape[1])[None, :] == pos[:, None])[..., None, None]
      k = jnp.where(here, k, cache_k)                            # [B, max_len, H, Dh]
      v = jnp.where(here, v, cache_v)
      cache = (k, v)
      mask = (jnp.arange(k.shape[1])[None, :] <= pos[:, None])[:, None, None, :]
    y, _ = self.self_attn.attend(h, k, v, mask)
    x = x + self.drop(y, deterministic=not train)
    y, cross_weights = self.cross_attn.attend(self.ln2(x), cross_k, cross_v,
                                              cross_mask[:, None, None, :])
    x = x + self.drop(y, deterministic=not train)
    x = x + self.drop(self.mlp(self.ln3(x), train), deterministic=not train)
    return x, cache, cross_weights


class Transformer(nn.Module):
  """The full model. See docs/ARCHITECTURE.md for the method contract."""
  vocab_size: int
  resnet_features: tuple[int, ...] = (64, 128, 256)
  resnet_blocks: tuple[int, ...] = (2, 2, 2)
  d_model: int = 256
  num_heads: int = 4
  mlp_dim: int = 1024
  encoder_layers: int = 2
  num_layers: int = 3
  max_len: int = 160
  pos_embedding: str = "sinusoidal"
  tie_embeddings: bool = True
  dropout: float = 0.1
  dtype: Any = jnp.float32

  def setup(self):
    if self.pos_embedding not in ("learned", "sinusoidal"):
      raise ValueError(f"config.model.pos_embedding {self.pos_embedding!r}: use 'learned' "
                       "or 'sinusoidal'.")
    self.cnn = ResNet(tuple(self.resnet_features), tuple(self.resnet_blocks), dtype=self.dtype)
    self.proj = nn.Dense(self.d_model, dtype=self.dtype)
    self.encoder = [EncoderLayer(self.num_heads, self.d_model, self.mlp_dim, self.dropout,
                                 dtype=self.dtype, name=f"encoder_{i}")
                    for i in range(self.encoder_layers)]
    self.encoder_norm = nn.LayerNorm(dtype=self.dtype)
    self.embed = nn.Embed(self.vocab_size, self.d_model,
                          embedding_init=nn.initializers.normal(stddev=1.0))
    if self.pos_embedding == "learned":
      self.pos_table = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                                  (self.max_len, self.d_model))
    else:
      self.pos_table = jnp.asarray(sinusoid_table(self.max_len, self.d_model))
    self.decoder = [DecoderLayer(self.num_heads, self.d_model, self.mlp_dim, self.dropout,
                                 dtype=self.dtype, name=f"decoder_{i}")
                    for i in range(self.num_layers)]
    self.decoder_norm = nn.LayerNorm(dtype=self.dtype)
    if not self.tie_embeddings:
      self.logits_dense = nn.Dense(self.vocab_size, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)

  # -- encoder

  def encode(self, images, image_hw, train: bool = False) -> Enc:
    x = layers.normalize_images(images, image_hw, self.dtype)
    feats = self.cnn(x, train)                                   # [B, H', W', C]
    b, fh, fw, _ = feats.shape
    if fh == 0 or fw == 0:
      raise ValueError(f"Images {images.shape[1:3]} are too small: the encoder reduces H and "
                       "W by 8; use buckets of at least 8×8 pixels.")
    mask = layers.feature_mask(image_hw, (fh, fw), images.shape[1:3]).reshape(b, fh * fw)
    x = self.proj(feats) + positional_encoding_2d(fh, fw, self.d_model).astype(self.dtype)
    x = self.drop(x.reshape(b, fh * fw, self.d_model), deterministic=not train)
    for layer in self.encoder:
      x = layer(x, mask, train)
    memory = self.encoder_norm(x)                                # [B, N, D]
    kv = [layer.cross_kv(memory) for layer in self.decoder]
    return {"memory": memory, "mask": mask,
            # [B, layers, N, heads, head_dim]
            "cross_keys": jnp.stack([k for k, _ in kv], 1),
            "cross_values": jnp.stack([v for _, v in kv], 1),
            "feature_hw": jnp.broadcast_to(jnp.array([fh, fw]), (b, 2))}

  # -- decoder

  def _embed(self, tokens, positions, train: bool):
    """tokens, positions int [B, T] -> [B, T, D]."""
    x = self.embed(tokens).astype(self.dtype)
    x = x + jnp.take(self.pos_table, positions, axis=0).astype(self.dtype)
    return self.drop(x, deterministic=not train)

  def _logits(self, x):
    x = self.decoder_norm(x)
    if self.tie_embeddings:
      # As Flax's wmt example: the shared embedding has unit-variance rows, so
      # the dot product is scaled back by sqrt(d_model).
      logits = self.embed.attend(x) / jnp.sqrt(x.shape[-1]).astype(x.dtype)
    else:
      logits = self.logits_dense(x)
    return logits.astype(jnp.float32)

  def init_carry(self, enc: Enc) -> Carry:
    b = enc["memory"].shape[0]
    head_dim = self.d_model // self.num_heads
    shape = (b, self.num_layers, self.max_len, self.num_heads, head_dim)
    return {"keys": jnp.zeros(shape, self.dtype), "values": jnp.zeros(shape, self.dtype),
            "pos": jnp.zeros((b,), jnp.int32)}

  def decode_step(self, enc: Enc, carry: Carry, token):
    """One token per example at position carry['pos'] (< max_len).

    Returns (logits [B, V], carry, attention [B, N]): the last layer's
    cross-attention averaged over heads.
    """
    pos = carry["pos"]
    x = self._embed(token[:, None], jnp.minimum(pos, self.max_len - 1)[:, None], False)
    keys, values, weights = [], [], None
    for i, layer in enumerate(self.decoder):
      x, (k, v), weights = layer(x, enc["cross_keys"][:, i], enc["cross_values"][:, i],
                                 enc["mask"], False, cache=(carry["keys"][:, i],
                                                            carry["values"][:, i]), pos=pos)
      keys.append(k)
      values.append(v)
    carry = {"keys": jnp.stack(keys, 1), "values": jnp.stack(values, 1), "pos": pos + 1}
    return self._logits(x)[:, 0], carry, weights[:, :, 0].mean(1)

  def __call__(self, images, image_hw, decoder_inputs, train: bool = False):
    b, t = decoder_inputs.shape
    if t > self.max_len:
      raise ValueError(f"{t} decoder inputs exceed config.model.max_len={self.max_len}; "
                       "raise max_len above the longest token bucket + 1.")
    enc = self.encode(images, image_hw, train)
    x = self._embed(decoder_inputs, jnp.broadcast_to(jnp.arange(t), (b, t)), train)
    for i, layer in enumerate(self.decoder):
      x, _, _ = layer(x, enc["cross_keys"][:, i], enc["cross_values"][:, i], enc["mask"], train)
    return self._logits(x)                                       # [B, T, V]
