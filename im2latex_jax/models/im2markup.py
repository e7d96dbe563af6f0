"""im2markup (Deng et al. 2017): CNN → row BiLSTM → LSTM decoder with attention.

Shapes follow the original Torch code (shared/DESIGN.md): a CNN without FC
layers reduces H and W by 8; a bidirectional LSTM runs along every row of the
feature grid, starting from an initial state learned per row index; a 1-layer
LSTM decoder with input feeding attends over all H'×W' cells with Luong's
"general" score and predicts the next token from `tanh(W_c [c_t; h_t])`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from im2latex_jax.models import layers

Carry = Any


class CNN(nn.Module):
  """im2markup's encoder CNN; all convs 3×3, stride 1, pad 1."""
  features: tuple[int, ...] = (64, 128, 256, 256, 512, 512)
  dtype: Any = jnp.float32
  conv_impl: str = "xla"   # layers.conv_general_dilated; the parameters are the same

  @nn.compact
  def __call__(self, x, train: bool):
    f = self.features
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=1, dtype=self.dtype,
                             conv_general_dilated=layers.conv_general_dilated(self.conv_impl, train))
    bn = functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    x = nn.relu(conv(f[0], name="conv0")(x))
    x = layers.max_pool(x, (2, 2))
    x = nn.relu(conv(f[1], name="conv1")(x))
    x = layers.max_pool(x, (2, 2))
    x = nn.relu(bn(name="bn2")(conv(f[2], name="conv2")(x)))
    x = nn.relu(conv(f[3], name="conv3")(x))
    x = layers.max_pool(x, (2, 1))            # halves H
    x = nn.relu(bn(name="bn4")(conv(f[4], name="conv4")(x)))
    x = layers.max_pool(x, (1, 2))            # halves W
    x = nn.relu(bn(name="bn5")(conv(f[5], name="conv5")(x)))
    return x


class RowEncoder(nn.Module):
  """A BiLSTM over each row; initial (c, h) learned per row index."""
  hidden: int = 256
  max_rows: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feats, row_lengths):
    b, h, w, c = feats.shape
    init = self.param("row_init", nn.initializers.zeros, (self.max_rows, 2, 2, self.hidden))
    rows = jnp.minimum(jnp.arange(h), self.max_rows - 1)
    init = jnp.broadcast_to(init[rows][None], (b, h, 2, 2, self.hidden))
    init = init.reshape(b * h, 2, 2, self.hidden)
    x = feats.reshape(b * h, w, c)
    lengths = jnp.repeat(row_lengths, h)
    # nn.OptimizedLSTMCell's parameters, run by layers.bidirectional_lstm: the
    # values of nn.RNN(cell) forward + nn.RNN(cell, reverse=True) (test
    # test_row_encoder_equals_two_flax_rnns) in half the sequential steps.
    weights = [layers.LSTMWeights(self.hidden, name=f"lstm_{d}")(c) for d in ("fw", "bw")]
    carries = [(init[:, d, 0], init[:, d, 1]) for d in range(2)]
    out = layers.bidirectional_lstm(x, weights, carries, lengths, self.dtype)
    return out.reshape(b, h, w, 2 * self.hidden)


class LuongDecoderCell(nn.Module):
  """One decoder step: input feeding, LSTM, Luong general attention.

  The LSTM's input is [embedding(token); o_prev]; its gate pre-activations
  are `token_gates[token] + o_prev W_o + h W_h` with `token_gates` = the
  embedding table times the input kernel's embedding rows plus the bias
  ([V, 4H], `weights()`), which is nn.OptimizedLSTMCell's sum in another
  order. `weights()` depends only on the parameters: a decoding loop computes
  it once (`Im2Markup.decode_weights`, `inference.step_fn`) and passes it in;
  a call without it concatenates the gate kernels and builds the table itself,
  which inside a loop costs more per step than the step (XLA does not hoist
  it), and is what the training scan avoids by passing it too. Decoding
  loops run `decode` instead: the same step with its products regrouped.
  """
  vocab_size: int
  hidden: int = 512
  embed_dim: int = 80
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    # The parameter names and shapes of the compact cell this replaced
    # (embed, lstm = nn.OptimizedLSTMCell's, combine, out): checkpoints load.
    self.embed = nn.Embed(self.vocab_size, self.embed_dim)
    self.lstm = layers.LSTMWeights(self.hidden)
    self.combine = nn.Dense(self.hidden, use_bias=False, dtype=self.dtype)
    self.out = nn.Dense(self.vocab_size, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def weights(self):
    wi, wh, b = self.lstm(self.embed_dim + self.hidden)
    table = jnp.dot(self.embed.embedding.astype(self.dtype), wi[:self.embed_dim].astype(self.dtype))
    return {"token_gates": table + b.astype(self.dtype),
            "wi_o": wi[self.embed_dim:].astype(self.dtype), "wh": wh.astype(self.dtype)}

  def __call__(self, enc, carry, token, train: bool = False, weights=None):
    w = self.weights() if weights is None else weights
    (c, h), o_prev = carry
    z = (w["token_gates"][token] + jnp.dot(o_prev.astype(self.dtype), w["wi_o"])
         + jnp.dot(h.astype(self.dtype), w["wh"]))
    c, h = layers.lstm_gates(z, c.astype(self.dtype))
    # score_i = ctx_i · W h  ==  keys_i · h with keys = ctx W^T, precomputed.
    scores = jnp.einsum("bnd,bd->bn", enc["keys"], h)
    attn = layers.masked_softmax(scores, enc["mask"])           # [B, N]
    ctx = jnp.einsum("bn,bnd->bd", attn.astype(self.dtype), enc["memory"])
    o = jnp.tanh(self.combine(jnp.concatenate([ctx, h], -1)))
    logits = self.out(self.drop(o, deterministic=not train))
    return ((c, h), o), (logits.astype(jnp.float32), attn)

  def decode_weights(self, enc):
    """What `decode` reads besides the carry and token, from the parameters
    and the encoding alone: the token-gate table, the kernels of the products
    it regroups, and `values` = memory · combine's context rows [B, N, H]."""
    w, hd = self.weights(), self.hidden
    comb = self.combine.variables["params"]["kernel"].astype(self.dtype)  # rows: [ctx; h]
    out = self.out.variables["params"]
    return {"token_gates": w["token_gates"],
            "h_cat": jnp.concatenate([w["wh"], comb[hd:]], 1),                   # [H, 4H + H]
            "o_cat": jnp.concatenate([w["wi_o"], out["kernel"].astype(self.dtype)], 1),  # [H, 4H + V]
            "out_bias": out["bias"].astype(self.dtype),
            "values": jnp.einsum("bnd,dk->bnk", enc["memory"].astype(self.dtype), comb[:hd])}

  def decode(self, enc, carry, token, weights=None):
    """The step of `__call__` (train=False) for a decoding loop, its products
    regrouped: carry is ((c, h), o, pre) with pre = o W_o + h W_h, the gates'
    share of the previous step's outputs, computed there. h [W_h | combine's
    h rows] and o [W_o | out] feed this step's combine and logits and the
    next step's gates, and combine's context half is attention over
    `values` (memory times those rows, once per call: attn (M W) = (attn M)
    W), so a step runs two matrix products instead of five; at batch 1, where
    a step is bound by reading weights and by its number of ops, that is
    ~1.3x faster on CPU. Same values up to the order of float sums
    (test_decode_step_matches_teacher_forcing)."""
    w = self.decode_weights(enc) if weights is None else weights
    hd = self.hidden
    (c, _), _, pre = carry
    c, h = layers.lstm_gates(w["token_gates"][token] + pre, c.astype(self.dtype))
    hp = jnp.dot(h.astype(self.dtype), w["h_cat"])
    scores = jnp.einsum("bnd,bd->bn", enc["keys"], h)
    attn = layers.masked_softmax(scores, enc["mask"])           # [B, N]
    o = jnp.tanh(jnp.einsum("bn,bnd->bd", attn.astype(self.dtype), w["values"]) + hp[:, 4 * hd:])
    op = jnp.dot(o, w["o_cat"])
    logits = op[:, 4 * hd:] + w["out_bias"]
    return ((c, h), o, hp[:, :4 * hd] + op[:, :4 * hd]), (logits.astype(jnp.float32), attn)


class Im2Markup(nn.Module):
  """The full model. See docs/ARCHITECTURE.md for the method contract."""
  vocab_size: int
  cnn_features: tuple[int, ...] = (64, 128, 256, 256, 512, 512)
  encoder_hidden: int = 256
  max_rows: int = 100
  decoder_hidden: int = 512
  embed_dim: int = 80
  dropout: float = 0.0
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  def setup(self):
    self.cnn = CNN(self.cnn_features, dtype=self.dtype, conv_impl=self.conv_impl)
    self.rows = RowEncoder(self.encoder_hidden, self.max_rows, dtype=self.dtype)
    self.key_proj = nn.Dense(self.decoder_hidden, use_bias=False, dtype=self.dtype)
    self.cell = LuongDecoderCell(self.vocab_size, self.decoder_hidden, self.embed_dim,
                                 self.dropout, dtype=self.dtype)

  def encode(self, images, image_hw, train: bool = False):
    x = layers.normalize_images(images, image_hw, self.dtype)
    feats = self.cnn(x, train)                                  # [B, H', W', C]
    b, fh, fw, _ = feats.shape
    mask = layers.feature_mask(image_hw, (fh, fw), images.shape[1:3])
    row_lengths = jnp.maximum(mask[:, 0, :].sum(-1), 1)
    memory = self.rows(feats, row_lengths).reshape(b, fh * fw, -1)
    return {"memory": memory, "keys": self.key_proj(memory),
            "mask": mask.reshape(b, fh * fw),
            "feature_hw": jnp.broadcast_to(jnp.array([fh, fw]), (b, 2))}

  def init_carry(self, enc):
    """The decoding carry ((c, h), o, pre) of LuongDecoderCell.decode."""
    b = enc["memory"].shape[0]
    z = jnp.zeros((b, self.decoder_hidden), self.dtype)
    return ((z, z), z, jnp.zeros((b, 4 * self.decoder_hidden), self.dtype))

  def decode_weights(self, enc):
    """What `decode_step` computes from the parameters and the encoding alone;
    pass it as `weights` so a decoding loop computes it once (inference.step_fn)."""
    return self.cell.decode_weights(enc)

  def decode_step(self, enc, carry, token, weights=None):
    carry, (logits, attn) = self.cell.decode(enc, carry, token, weights=weights)
    return logits, carry, attn

  def __call__(self, images, image_hw, decoder_inputs, train: bool = False):
    enc = self.encode(images, image_hw, train)
    weights = self.cell.weights()
    scan = nn.scan(lambda cell, carry, tok: cell(enc, carry, tok, train, weights),
                   variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                   in_axes=1, out_axes=1)
    _, (logits, _) = scan(self.cell, self.init_carry(enc)[:2], decoder_inputs)
    return logits                                                 # [B, T, V]
