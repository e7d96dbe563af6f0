"""The Transformer model: shapes, KV-cache decoding == teacher forcing, masking,
decoding through inference.make_decode_fn, a train step, parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from im2latex_jax import state as state_lib
from im2latex_jax import steps as steps_lib
from im2latex_jax import defaults
from im2latex_jax.infer import inference
from im2latex_jax import models
from im2latex_jax import optim
from im2latex_jax.data import buckets
from im2latex_jax.data import vocab as vocab_lib

from conftest import tiny_config

V = 25


def _config(**overrides):
  """A transformer small enough to compile in seconds on 2 CPU cores."""
  c = tiny_config()
  c.model.name = "transformer"
  c.model.init = "default"
  c.model.resnet_features = (4, 8, 8)
  c.model.resnet_blocks = (1, 1, 1)
  c.model.d_model = 16
  c.model.num_heads = 2
  c.model.mlp_dim = 32
  c.model.encoder_layers = 1
  c.model.num_layers = 2
  c.model.max_len = 12
  c.model.dropout = 0.1  # must be inactive whenever train=False
  for k, v in overrides.items():
    c.model[k] = v
  return c


def _init(model, h=40, w=160, t=6, b=2):
  img = jnp.full((b, h, w, 1), 255, jnp.uint8)
  hw = jnp.tile(jnp.array([[h, w]]), (b, 1))
  return jax.jit(model.init)(jax.random.key(0), img, hw, jnp.zeros((b, t), jnp.int32))


def _jit_methods(model, variables):
  """Jitted forward / encode+init_carry / decode_step (eager applies are slow on CPU)."""
  forward = jax.jit(lambda img, hw, toks: model.apply(variables, img, hw, toks))

  @jax.jit
  def encode(img, hw):
    enc = model.apply(variables, img, hw, method=model.encode)
    return enc, model.apply(variables, enc, method=model.init_carry)

  step = jax.jit(lambda enc, carry, tok: model.apply(variables, enc, carry, tok,
                                                     method=model.decode_step))
  return forward, encode, step


def _random_image(rng, b=2, h=40, w=160):
  return jnp.asarray(rng.integers(0, 256, (b, h, w, 1)), jnp.uint8)


def test_parameter_count_of_config_file():
  import transformer as transformer_config  # pylint: disable=g-import-not-at-top
  cfg = transformer_config.get_config()
  model = models.get_model(cfg.model, 500)
  variables = jax.eval_shape(lambda: _init(model, 64, 256, 4, 1))
  n = state_lib.param_count(variables["params"])
  print(f"configs/transformer.py, 500-token vocabulary: {n:,} parameters")
  assert 7.0e6 < n < 8.5e6, n
  # Decoding must fit into the KV cache, teacher forcing into the positions.
  assert cfg.model.max_len >= cfg.evals.max_decode_len
  assert cfg.model.max_len >= max(cfg.input.token_buckets) + 1


def test_output_shapes_per_bucket():
  model = models.get_model(_config().model, V)
  forward, encode, _ = _jit_methods(model, _init(model))
  for h, w in buckets.IM2MARKUP_BUCKETS[:3]:
    img = jnp.full((3, h, w, 1), 200, jnp.uint8)
    hw = jnp.array([[h, w], [h - 5, w // 2], [h, w]])
    logits = forward(img, hw, jnp.zeros((3, 7), jnp.int32))
    assert logits.shape == (3, 7, V) and logits.dtype == jnp.float32
    enc, carry = encode(img, hw)
    fh, fw = (int(v) for v in enc["feature_hw"][0])
    assert (fh, fw) == (h // 8, w // 8)
    assert enc["memory"].shape == (3, fh * fw, 16) and enc["mask"].shape == (3, fh * fw)
    assert enc["cross_keys"].shape == (3, 2, fh * fw, 2, 8)
    # The half-width image masks the right half of the feature grid.
    assert enc["mask"][1].reshape(fh, fw)[:, : fw // 2].all()
    assert not enc["mask"][1].reshape(fh, fw)[:, fw // 2 + 1:].any()
    assert carry["keys"].shape == (3, 2, 12, 2, 8) and carry["pos"].shape == (3,)
    # Beam search flattens and gathers every leaf along the batch dimension.
    for leaf in jax.tree.leaves((enc, carry)):
      assert leaf.shape[0] == 3, leaf.shape


@pytest.mark.parametrize("pos_embedding,tie", [("sinusoidal", True), ("learned", False)])
def test_decode_step_matches_teacher_forcing(pos_embedding, tie):
  model = models.get_model(_config(pos_embedding=pos_embedding, tie_embeddings=tie).model, V)
  forward, encode, step = _jit_methods(model, _init(model))
  rng = np.random.default_rng(0)
  img = _random_image(rng)
  hw = jnp.array([[40, 160], [32, 100]])
  toks = jnp.asarray(rng.integers(0, V, (2, 6)), jnp.int32)
  logits = forward(img, hw, toks)
  enc, carry = encode(img, hw)
  for t in range(6):
    step_logits, carry, attn = step(enc, carry, toks[:, t])
    np.testing.assert_allclose(step_logits, logits[:, t], atol=1e-5)
    assert attn.shape == (2, enc["mask"].shape[1])
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.abs(attn * ~enc["mask"]).max()) == 0.0  # no weight on padding
  np.testing.assert_array_equal(carry["pos"], [6, 6])


def test_padding_content_does_not_change_output():
  """Pixels outside image_hw and memory cells outside the mask are ignored."""
  model = models.get_model(_config().model, V)
  forward, encode, step = _jit_methods(model, _init(model))
  rng = np.random.default_rng(1)
  img = np.full((1, 40, 160, 1), 255, np.uint8)
  img[0, :30, :100] = rng.integers(0, 256, (30, 100, 1))
  noisy = img.copy()
  noisy[0, 30:, :] = rng.integers(0, 256, (10, 160, 1))
  noisy[0, :, 100:] = rng.integers(0, 256, (40, 60, 1))
  hw = jnp.array([[30, 100]])
  toks = jnp.asarray(rng.integers(0, V, (1, 6)), jnp.int32)
  a = forward(jnp.asarray(img), hw, toks)
  b = forward(jnp.asarray(noisy), hw, toks)
  np.testing.assert_array_equal(a, b)

  enc, carry = encode(jnp.asarray(img), hw)
  assert not enc["mask"].all()
  cell = enc["mask"][:, None, :, None, None]                      # [B, 1, N, 1, 1]
  junk = dict(enc, cross_keys=jnp.where(cell, enc["cross_keys"], 1e3),
              cross_values=jnp.where(cell, enc["cross_values"], -1e3))
  l1, _, _ = step(enc, carry, toks[:, 0])
  l2, _, _ = step(junk, carry, toks[:, 0])
  np.testing.assert_allclose(l1, l2, atol=1e-6)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_make_decode_fn(beam_size):
  """Greedy and beam search drive decode_step inside lax.while_loop."""
  model = models.get_model(_config().model, V)
  variables = _init(model)
  rng = np.random.default_rng(2)
  img = _random_image(rng)
  hw = jnp.array([[40, 160], [24, 80]])
  fn = inference.make_decode_fn(model, beam_size=beam_size, max_len=8,
                                collect_attention=beam_size == 1)
  out = fn(variables, img, hw)
  if beam_size == 1:
    assert set(out) == {"tokens", "logprobs", "token_logprobs", "lengths", "attention",
                        "feature_hw"}
    assert out["attention"].shape == (2, 8, 5 * 20)
    # The while-loop's cached decoding scores its own output exactly as
    # teacher forcing does.
    tokens = np.asarray(out["tokens"])
    inputs = np.concatenate([np.full((2, 1), vocab_lib.BOS), tokens[:, :-1]], 1)
    logp = jax.nn.log_softmax(jax.jit(model.apply)(variables, img, hw, jnp.asarray(inputs)))
    tf = np.take_along_axis(np.asarray(logp), tokens[..., None], -1)[..., 0]
    n = np.asarray(out["lengths"])
    for i in range(2):
      np.testing.assert_allclose(out["token_logprobs"][i, :n[i]], tf[i, :n[i]], atol=1e-5)
  else:
    assert {"tokens", "logprobs", "lengths", "beam_tokens", "beam_scores"} <= set(out)
    assert out["beam_tokens"].shape == (2, beam_size, 8)
  assert out["tokens"].shape == (2, 8) and out["lengths"].shape == (2,)
  assert np.isfinite(np.asarray(out["logprobs"])).all()


def test_train_steps_lower_the_loss():
  cfg = _config(dropout=0.0)
  cfg.optim.name = "adamw"
  cfg.optim.lr = 3e-3
  cfg.optim.warmup_steps = 0
  model, tx, plateau = state_lib.build_model_and_optimizer(cfg, V)
  state = jax.jit(state_lib.make_init_fn(model, tx, plateau, cfg, (40, 160)))(jax.random.key(0))
  step = jax.jit(steps_lib.make_train_step(model, tx, optim.make_lr_schedule(cfg.optim),
                                       jax.random.key(1)))
  rng = np.random.default_rng(3)
  tokens = np.zeros((4, 8), np.int32)
  tokens[:, 0] = vocab_lib.BOS
  tokens[:, 1:6] = rng.integers(4, V, (4, 5))
  tokens[:, 6] = vocab_lib.EOS
  batch = {"image": np.asarray(_random_image(rng, b=4)),
           "image_hw": np.tile([[40, 160]], (4, 1)).astype(np.int32),
           "tokens": tokens, "weight": np.ones((4,), np.float32)}
  losses = []
  for _ in range(3):  # the metrics of call i are those before its update
    state, m = step(state, batch)
    losses.append(float(m["loss_sum"] / m["tokens"]))
  assert np.isfinite(losses).all() and int(m["first_nonfinite"]) == np.iinfo(np.int32).max
  assert losses[2] < losses[0], losses
  assert int(state.step) == 3 and jax.tree.leaves(state.batch_stats)


def test_config_errors_name_the_fix():
  model = models.get_model(_config(num_heads=3).model, V)
  with pytest.raises(ValueError, match="not divisible by num_heads"):
    _init(model)
  model = models.get_model(_config().model, V)
  with pytest.raises(ValueError, match="exceed config.model.max_len=12"):
    _init(model, t=13)
  assert defaults.base_config().model.name == "im2markup"  # default unchanged
