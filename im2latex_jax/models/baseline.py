"""The seed's baseline: resize → CNN → GRU decoder with Bahdanau attention.

The design of the TensorFlow image-captioning tutorial the 2019 project
started from: every image is resized to one size, a small CNN turns it into a
grid of features, and a GRU decoder reads `[context; embedding]` with additive
attention `v · tanh(W1 f_i + W2 h)`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from im2latex_jax.models import layers


class BahdanauDecoderCell(nn.Module):
  vocab_size: int
  hidden: int = 512
  embed_dim: int = 80
  attention_dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, enc, carry, token, train: bool = False):
    del train
    h = carry
    q = nn.Dense(self.attention_dim, dtype=self.dtype, name="query")(h)
    scores = nn.Dense(1, dtype=self.dtype, name="v")(
        jnp.tanh(enc["keys"] + q[:, None]))[..., 0]
    attn = layers.masked_softmax(scores, enc["mask"])
    ctx = jnp.einsum("bn,bnd->bd", attn.astype(self.dtype), enc["memory"])
    emb = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(token).astype(self.dtype)
    h, _ = nn.GRUCell(self.hidden, dtype=self.dtype, name="gru")(
        h, jnp.concatenate([ctx, emb], -1))
    x = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(h)
    logits = nn.Dense(self.vocab_size, dtype=self.dtype, name="fc2")(x)
    return h, (logits.astype(jnp.float32), attn)


class Baseline(nn.Module):
  vocab_size: int
  resize_hw: tuple[int, int] = (64, 256)
  cnn_features: tuple[int, ...] = (64, 128, 256, 256)
  decoder_hidden: int = 512
  embed_dim: int = 80
  attention_dim: int = 256
  dtype: Any = jnp.float32

  def setup(self):
    self.convs = [nn.Conv(f, (3, 3), padding=1, dtype=self.dtype, name=f"conv{i}")
                  for i, f in enumerate(self.cnn_features)]
    self.proj = nn.Dense(self.decoder_hidden, dtype=self.dtype)
    self.key_proj = nn.Dense(self.attention_dim, dtype=self.dtype)
    self.cell = BahdanauDecoderCell(self.vocab_size, self.decoder_hidden, self.embed_dim,
                                    self.attention_dim, dtype=self.dtype)

  def encode(self, images, image_hw, train: bool = False):
    del train
    x = layers.normalize_images(images, image_hw, self.dtype)
    b = x.shape[0]
    x = jax.image.resize(x, (b, *self.resize_hw, 1), "linear")
    for i, conv in enumerate(self.convs):
      x = nn.relu(conv(x))
      if i < 3:
        x = layers.max_pool(x, (2, 2))
    _, fh, fw, c = x.shape
    memory = nn.relu(self.proj(x.reshape(b, fh * fw, c)))
    return {"memory": memory, "keys": self.key_proj(memory),
            "mask": jnp.ones((b, fh * fw), bool),
            "feature_hw": jnp.broadcast_to(jnp.array([fh, fw]), (b, 2))}

  def init_carry(self, enc):
    return jnp.zeros((enc["memory"].shape[0], self.decoder_hidden), self.dtype)

  def decode_step(self, enc, carry, token):
    carry, (logits, attn) = self.cell(enc, carry, token)
    return logits, carry, attn

  def __call__(self, images, image_hw, decoder_inputs, train: bool = False):
    enc = self.encode(images, image_hw, train)
    scan = nn.scan(lambda cell, carry, tok: cell(enc, carry, tok, train),
                   variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1)
    _, (logits, _) = scan(self.cell, self.init_carry(enc), decoder_inputs)
    return logits
