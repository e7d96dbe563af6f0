"""The train step: sharded == single device, overfitting, no retrace, plateau."""


import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from im2latex_jax import state as state_lib
from im2latex_jax import steps as steps_lib
from im2latex_jax import optim
from im2latex_jax import sharding
from im2latex_jax.data import vocab as vocab_lib

from conftest import tiny_config

V = 20


def _batch(rng, b=8, h=40, w=160, t=9):
  tokens = np.zeros((b, t), np.int32)
  for i in range(b):
    n = rng.integers(2, t - 2)
    tokens[i, 0] = vocab_lib.BOS
    tokens[i, 1:n + 1] = rng.integers(4, V, n)
    tokens[i, n + 1] = vocab_lib.EOS
  img = np.full((b, h, w, 1), 255, np.uint8)
  img[:, 5:30, 10:120] = rng.integers(0, 256, (b, 25, 110, 1))
  return {"image": img, "image_hw": np.tile([[h, w]], (b, 1)).astype(np.int32),
          "tokens": tokens, "weight": np.ones((b,), np.float32)}


def _setup(cfg, mesh):
  model, tx, plateau = state_lib.build_model_and_optimizer(cfg, V)
  lr_fn = optim.make_lr_schedule(cfg.optim)
  repl = NamedSharding(mesh, P())
  init = state_lib.make_init_fn(model, tx, plateau, cfg, (40, 160))
  state = jax.jit(init, out_shardings=repl)(jax.random.key(0))
  step = jax.jit(steps_lib.make_train_step(model, tx, lr_fn, jax.random.key(1)),
                 in_shardings=(repl, NamedSharding(mesh, P("data"))),
                 out_shardings=(repl, repl))
  return state, step


def test_sharded_step_equals_single_device():
  assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
  cfg = tiny_config()
  cfg.optim.name = "momentum"
  cfg.optim.lr = 0.1
  batch = _batch(np.random.default_rng(0))
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.array(devices), ("data",))
    state, step = _setup(cfg, mesh)
    for _ in range(2):
      state, m = step(state, sharding.shard_batch(batch, mesh))
    results.append((jax.device_get(state), jax.device_get(m)))
  (s1, m1), (s8, m8) = results
  np.testing.assert_allclose(m1["loss_sum"], m8["loss_sum"], rtol=1e-5)
  chex.assert_trees_all_close(s1.params, s8.params, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(s1.batch_stats, s8.batch_stats, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(s1.opt_state, s8.opt_state, rtol=1e-4, atol=1e-6)


def test_overfit_one_batch():
  """The seed's sanity check: one batch, many steps, loss near zero."""
  cfg = tiny_config()
  cfg.model.cnn_features = (8, 8, 16, 16, 16, 16)
  cfg.model.decoder_hidden = 64
  cfg.model.embed_dim = 16
  cfg.optim.name = "adam"
  cfg.optim.lr = 1e-2
  mesh = sharding.make_mesh()
  state, step = _setup(cfg, mesh)
  batch = sharding.shard_batch(_batch(np.random.default_rng(2)), mesh)
  first = None
  for _ in range(150):
    state, m = step(state, batch)
    loss = float(m["loss_sum"] / m["tokens"])
    first = first or loss
  assert first > 2.0
  assert loss < 0.05, loss


def test_non_finite_step_leaves_state_and_reports_step():
  cfg = tiny_config()
  mesh = sharding.make_mesh()
  state, step = _setup(cfg, mesh)
  batch = _batch(np.random.default_rng(3))
  state, _ = step(state, sharding.shard_batch(batch, mesh))
  before = jax.device_get(state.params)
  bad = dict(batch, weight=np.full((8,), np.nan, np.float32))
  state, m = step(state, sharding.shard_batch(bad, mesh))
  assert int(m["first_nonfinite"]) == 1
  chex.assert_trees_all_equal(jax.device_get(state.params), before)
  assert int(state.step) == 2


def test_padding_examples_do_not_change_loss():
  cfg = tiny_config()
  mesh = sharding.make_mesh()
  state, _ = _setup(cfg, mesh)
  model, _, _ = state_lib.build_model_and_optimizer(cfg, V)
  eval_step = jax.jit(steps_lib.make_eval_step(model))
  batch = _batch(np.random.default_rng(4))
  padded = jax.tree.map(lambda x: x.copy(), batch)
  padded["weight"][4:] = 0.0
  padded["tokens"][4:] = np.random.default_rng(5).integers(0, V, padded["tokens"][4:].shape)
  half = jax.tree.map(lambda x: x[:4], batch)
  a = eval_step(state.variables, padded)
  b = eval_step(state.variables, half)
  np.testing.assert_allclose(a["loss_sum"], b["loss_sum"], rtol=1e-5)
  assert float(a["tokens"]) == float(b["tokens"])
  # Tokens after EOS (PAD) carry no weight either.
  junk = jax.tree.map(lambda x: x.copy(), half)
  eos = np.argmax(junk["tokens"] == vocab_lib.EOS, axis=1)
  c = eval_step(state.variables, junk)
  np.testing.assert_allclose(c["loss_sum"], b["loss_sum"], rtol=1e-6)
  assert int(eos.min()) > 0


def test_step_traces_once_per_shape():
  cfg = tiny_config()
  mesh = sharding.make_mesh()
  model, tx, plateau = state_lib.build_model_and_optimizer(cfg, V)
  repl = NamedSharding(mesh, P())
  state = jax.jit(state_lib.make_init_fn(model, tx, plateau, cfg, (40, 160)),
                  out_shardings=repl)(jax.random.key(0))
  raw = steps_lib.make_train_step(model, tx, optim.make_lr_schedule(cfg.optim), jax.random.key(1))
  step = jax.jit(chex.assert_max_traces(raw, n=2))
  rng = np.random.default_rng(6)
  for i in range(6):
    shape = ((40, 160, 9), (50, 120, 12))[i % 2]
    b = _batch(rng, h=shape[0], w=shape[1], t=shape[2])
    state, _ = step(state, sharding.shard_batch(b, mesh))


def test_plateau_halves_lr_when_loss_rises():
  cfg = tiny_config()
  cfg.optim.plateau.patience = 1
  cfg.optim.plateau.factor = 0.5
  plateau = optim.make_plateau(cfg.optim)
  st = plateau.init({})
  for loss, want in [(3.0, 1.0), (2.5, 1.0), (2.6, 0.5), (2.4, 0.5), (2.45, 0.25)]:
    st = optim.update_plateau(plateau, st, "loss", loss)
    assert float(st.scale) == want, (loss, float(st.scale))
  # Maximised metrics are negated: a falling BLEU lowers the lr.
  st = plateau.init({})
  for bleu, want in [(10.0, 1.0), (12.0, 1.0), (11.0, 0.5)]:
    st = optim.update_plateau(plateau, st, "bleu4", bleu)
    assert float(st.scale) == want


def test_cosine_schedule_hand_computed():
  cfg = tiny_config()
  cfg.optim.lr, cfg.optim.warmup_steps = 0.1, 10
  cfg.optim.decay, cfg.optim.end_lr_factor = "cosine", 0.1
  lr = optim.make_lr_schedule(cfg.optim, num_steps=110)
  # warmup 0 -> 0.1 over 10 steps; then 0.01 + 0.09 * (1 + cos(pi * t)) / 2.
  for step, want in [(0, 0.0), (5, 0.05), (10, 0.1), (60, 0.055), (110, 0.01)]:
    np.testing.assert_allclose(float(lr(step)), want, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="needs a training length longer than the 10 warm-up"):
    optim.make_lr_schedule(cfg.optim, num_steps=None)
  cfg.optim.decay = "linear"
  with pytest.raises(ValueError, match="'none' or 'cosine'"):
    optim.make_lr_schedule(cfg.optim, num_steps=110)
  cfg.optim.decay = "none"   # the default: constant after warmup
  assert float(optim.make_lr_schedule(cfg.optim)(1000)) == pytest.approx(0.1)


def test_per_tensor_clip():
  tx = optim.clip_by_per_tensor_norm(5.0)
  g = {"a": jnp.array([30.0, 40.0]), "b": jnp.array([3.0, 0.0])}
  out, _ = tx.update(g, tx.init(g))
  np.testing.assert_allclose(out["a"], [3.0, 4.0], rtol=1e-6)   # norm 50 -> 5
  np.testing.assert_allclose(out["b"], [3.0, 0.0])              # norm 3 kept


def test_frozen_modules_keep_their_values_and_the_rest_trains_as_before():
  """config.optim.frozen: the decoder stays bit for bit; with plain SGD and no
  clip the encoder's update is the one of the unfrozen run (its gradient does
  not depend on whether the decoder moves)."""
  mesh = sharding.make_mesh()
  batch = sharding.shard_batch(_batch(np.random.default_rng(4)), mesh)
  out = {}
  for frozen in ("", "cell,key_proj"):
    cfg = tiny_config()
    cfg.optim.name, cfg.optim.lr, cfg.optim.clip = "sgd", 0.5, "none"
    cfg.optim.frozen = frozen
    state, step = _setup(cfg, mesh)
    init = jax.device_get(state.params)
    state, _ = step(state, batch)
    out[frozen] = init, jax.device_get(state.params)
  (init, plain), (_, frozen) = out[""], out["cell,key_proj"]
  assert set(init) == {"cnn", "rows", "key_proj", "cell"}
  for name in ("cell", "key_proj"):
    chex.assert_trees_all_equal(frozen[name], init[name])
    assert not np.allclose(plain[name]["kernel"] if name == "key_proj"
                           else plain[name]["out"]["kernel"],
                           init[name]["kernel"] if name == "key_proj"
                           else init[name]["out"]["kernel"])
  for name in ("cnn", "rows"):
    chex.assert_trees_all_close(frozen[name], plain[name], rtol=1e-5, atol=1e-7)
  cfg.optim.frozen = "cell,decoder"
  with pytest.raises(ValueError, match="decoder names no parameter; give paths"):
    _setup(cfg, mesh)


def test_batch_size_not_divisible():
  mesh = sharding.make_mesh()
  with pytest.raises(ValueError, match="not divisible by the 8 devices.*multiple of 8"):
    sharding.check_batch_size(30, mesh)
