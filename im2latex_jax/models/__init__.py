"""Model registry: `get_model(config.model, vocab_size)`."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from im2latex_jax.models.baseline import Baseline
from im2latex_jax.models.im2markup import Im2Markup
from im2latex_jax.models.layers import apply_init_scheme
from im2latex_jax.models.transformer import Transformer

MODELS = ("im2markup", "baseline", "transformer")
# (H, W) of the dummy image that creates (or shapes) a model's variables. Any
# size gives the same variables: no layer's shape depends on the image size.
INIT_HW = (32, 128)


def init_variables(model, rng, hw: tuple[int, int] = INIT_HW) -> dict:
  """`model.init` on a dummy [1, H, W, 1] image and 4 tokens: the variables."""
  h, w = hw
  return model.init({"params": rng}, jnp.zeros((1, h, w, 1), jnp.uint8),
                    jnp.array([[h, w]], jnp.int32), jnp.zeros((1, 4), jnp.int32))


def get_model(cfg: ml_collections.ConfigDict, vocab_size: int):
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(cfg.dtype)
  if dtype is None:
    raise ValueError(f"config.model.dtype {cfg.dtype!r} is not 'float32' or 'bfloat16'.")
  if cfg.name == "im2markup":
    return Im2Markup(vocab_size=vocab_size, cnn_features=tuple(cfg.cnn_features),
                     encoder_hidden=cfg.encoder_hidden, max_rows=cfg.max_rows,
                     decoder_hidden=cfg.decoder_hidden, embed_dim=cfg.embed_dim,
                     dropout=cfg.dropout, dtype=dtype,
                     conv_impl=cfg.get("conv_impl", "xla"))
  if cfg.name == "baseline":
    return Baseline(vocab_size=vocab_size, resize_hw=tuple(cfg.resize_hw),
                    cnn_features=tuple(cfg.cnn_features),
                    decoder_hidden=cfg.decoder_hidden, embed_dim=cfg.embed_dim,
                    attention_dim=cfg.attention_dim, dtype=dtype)
  if cfg.name == "transformer":
    return Transformer(vocab_size=vocab_size, resnet_features=tuple(cfg.resnet_features),
                       resnet_blocks=tuple(cfg.resnet_blocks), d_model=cfg.d_model,
                       num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim,
                       encoder_layers=cfg.encoder_layers, num_layers=cfg.num_layers,
                       max_len=cfg.max_len, pos_embedding=cfg.pos_embedding,
                       tie_embeddings=cfg.tie_embeddings, dropout=cfg.dropout, dtype=dtype)
  raise ValueError(f"Unknown config.model.name {cfg.name!r}; choose one of {MODELS}.")


__all__ = ["get_model", "init_variables", "INIT_HW", "apply_init_scheme", "Im2Markup", "Baseline", "Transformer", "MODELS"]
