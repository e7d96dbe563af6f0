"""Model shapes, parameter count, masking and the decode-step contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from im2latex_jax import defaults
from im2latex_jax import models
from im2latex_jax.data import buckets
from im2latex_jax.infer import inference

from conftest import tiny_config


def _init(model, h=40, w=160, t=6, b=2):
  img = jnp.full((b, h, w, 1), 255, jnp.uint8)
  hw = jnp.tile(jnp.array([[h, w]]), (b, 1))
  return model.init(jax.random.key(0), img, hw, jnp.zeros((b, t), jnp.int32))


def test_im2markup_parameter_count_matches_paper():
  cfg = defaults.base_config()
  model = models.get_model(cfg.model, 500)
  variables = jax.eval_shape(lambda: _init(model))
  n = sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
  # shared/DESIGN.md: ~9.4 M parameters for a ~500-token vocabulary.
  assert 9.2e6 < n < 9.7e6, n


@pytest.mark.parametrize("name", ["im2markup", "baseline"])
def test_output_shapes_per_bucket(name):
  cfg = tiny_config()
  cfg.model.name = name
  if name == "baseline":
    cfg.model.cnn_features = (4, 8, 8, 8)
    cfg.model.resize_hw = (32, 128)
  model = models.get_model(cfg.model, 30)
  variables = _init(model)
  for h, w in buckets.IM2MARKUP_BUCKETS[:4]:
    img = jnp.full((3, h, w, 1), 200, jnp.uint8)
    hw = jnp.array([[h, w], [h - 5, w // 2], [h, w]])
    logits = model.apply(variables, img, hw, jnp.zeros((3, 7), jnp.int32))
    assert logits.shape == (3, 7, 30)
    enc = model.apply(variables, img, hw, method=model.encode)
    fh, fw = (int(v) for v in enc["feature_hw"][0])
    assert enc["memory"].shape[:2] == (3, fh * fw) and enc["mask"].shape == (3, fh * fw)
    if name == "im2markup":
      assert (fh, fw) == (h // 8, w // 8)
      # The half-width image masks the right half of the feature grid.
      assert enc["mask"][1].reshape(fh, fw)[:, : fw // 2].all()
      assert not enc["mask"][1].reshape(fh, fw)[:, fw // 2 + 1:].any()


def test_unknown_model_name():
  cfg = tiny_config()
  cfg.model.name = "transformerz"
  with pytest.raises(ValueError, match="Unknown config.model.name 'transformerz'"):
    models.get_model(cfg.model, 10)


def test_decode_step_matches_teacher_forcing():
  cfg = tiny_config()
  model = models.get_model(cfg.model, 25)
  variables = _init(model)
  rng = np.random.default_rng(0)
  img = jnp.asarray(rng.integers(0, 256, (2, 40, 160, 1)), jnp.uint8)
  hw = jnp.array([[40, 160], [32, 100]])
  toks = jnp.asarray(rng.integers(0, 25, (2, 5)), jnp.int32)
  logits = model.apply(variables, img, hw, toks)
  enc = model.apply(variables, img, hw, method=model.encode)
  carry = model.apply(variables, enc, method=model.init_carry)
  for t in range(5):
    step_logits, carry, attn = model.apply(variables, enc, carry, toks[:, t],
                                           method=model.decode_step)
    np.testing.assert_allclose(step_logits, logits[:, t], atol=1e-5)
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.abs(attn * ~enc["mask"]).max()) == 0.0  # no weight on padding


def test_padding_content_does_not_change_output():
  """Pixels outside image_hw and memory cells outside the mask are ignored."""
  cfg = tiny_config()
  model = models.get_model(cfg.model, 25)
  variables = _init(model)
  rng = np.random.default_rng(1)
  img = np.full((1, 40, 160, 1), 255, np.uint8)
  img[0, :30, :100] = rng.integers(0, 256, (30, 100, 1))
  noisy = img.copy()
  noisy[0, 30:, :] = rng.integers(0, 256, (10, 160, 1))
  noisy[0, :, 100:] = rng.integers(0, 256, (40, 60, 1))
  hw = jnp.array([[30, 100]])
  toks = jnp.asarray(rng.integers(0, 25, (1, 6)), jnp.int32)
  a = model.apply(variables, jnp.asarray(img), hw, toks)
  b = model.apply(variables, jnp.asarray(noisy), hw, toks)
  np.testing.assert_array_equal(a, b)

  enc = model.apply(variables, jnp.asarray(img), hw, method=model.encode)
  junk = dict(enc)
  junk["memory"] = jnp.where(enc["mask"][..., None], enc["memory"], 1e3)
  junk["keys"] = jnp.where(enc["mask"][..., None], enc["keys"], -1e3)
  carry = model.apply(variables, enc, method=model.init_carry)
  l1, _, _ = model.apply(variables, enc, carry, toks[:, 0], method=model.decode_step)
  l2, _, _ = model.apply(variables, junk, carry, toks[:, 0], method=model.decode_step)
  np.testing.assert_allclose(l1, l2, atol=1e-6)
  # ... and so is the junk in precomputed decoding weights (im2markup's attention values).
  step = inference.step_fn(model, variables, junk)
  np.testing.assert_allclose(step(carry, toks[:, 0])[0], l1, atol=1e-6)


@pytest.mark.parametrize("scheme", ["uniform", "conv_he", "default"])
def test_init_schemes(scheme):
  cfg = tiny_config()
  cfg.model.init = scheme
  model = models.get_model(cfg.model, 25)
  params = _init(model)["params"]
  out = models.apply_init_scheme(params, cfg.model, jax.random.key(1))
  dec = out["cell"]["out"]["kernel"]
  conv = out["cnn"]["conv0"]["kernel"]
  bn_scale = out["cnn"]["bn2"]["scale"]
  np.testing.assert_array_equal(bn_scale, 1.0)  # BatchNorm starts as identity
  if scheme == "uniform":
    assert float(jnp.abs(dec).max()) <= 0.05 and float(jnp.abs(conv).max()) <= 0.05
    assert float(jnp.abs(conv).max()) > 0.04
  elif scheme == "conv_he":
    np.testing.assert_array_equal(dec, params["cell"]["out"]["kernel"])
    assert float(jnp.std(conv)) == pytest.approx(np.sqrt(2 / 9), rel=0.35)
  else:
    np.testing.assert_array_equal(conv, params["cnn"]["conv0"]["kernel"])


@pytest.mark.parametrize("window", [(2, 2), (2, 1), (1, 2)])
def test_max_pool_matches_flax_values_and_gradient(window):
  # Odd sizes: both floor-divide (VALID), dropping the last row/column.
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from im2latex_jax.models import layers  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 9, 3))
  ours = lambda x: layers.max_pool(x, window)
  flax_pool = lambda x: nn.max_pool(x, window, window)
  np.testing.assert_array_equal(ours(x), flax_pool(x))
  assert ours(x).shape == (2, 7 // window[0], 9 // window[1], 3)
  g = jax.random.normal(jax.random.PRNGKey(1), ours(x).shape)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * g))(x)
  np.testing.assert_array_equal(grad(ours), grad(flax_pool))


@pytest.mark.parametrize("kernel,padding", [((3, 3), ((1, 1), (1, 1))), ((1, 1), ((0, 0), (0, 0))),
                                            ((3, 5), ((0, 2), (1, 3)))])
def test_im2col_conv_equals_lax(kernel, padding):
  from im2latex_jax.models import layers  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 9, 13, 5)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(*kernel, 5, 7)), jnp.float32)
  dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
  want = jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=dn,
                                      precision="highest")
  got = layers.im2col_conv(x, k, (1, 1), padding, dimension_numbers=dn, precision="highest")
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Strides are not im2col's case: lax computes them.
  strided = layers.im2col_conv(x, k, (2, 2), padding, dimension_numbers=dn)
  assert strided.shape == jax.lax.conv_general_dilated(x, k, (2, 2), padding,
                                                       dimension_numbers=dn).shape


@pytest.mark.parametrize("hw,padding", [((9, 13), ((1, 1), (1, 1))), ((8, 10), ((1, 1), (1, 1))),
                                        ((7, 12), ((0, 2), (1, 0))), ((6, 6), ((0, 0), (0, 0)))])
def test_winograd_conv_equals_lax(hw, padding, monkeypatch):
  """Values and both gradients of F(2x2, 3x3) equal lax's convolution, for
  odd and even output sizes (tiles padded, then cropped) and any padding."""
  from im2latex_jax.models import layers  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(layers, "WINOGRAD_MIN_CHANNELS", 8)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, *hw, 9)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 9, 7)), jnp.float32)
  dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))

  def loss(conv):
    return lambda x, k: jnp.sum(jnp.sin(conv(x, k, (1, 1), padding, dimension_numbers=dn,
                                             precision="highest")))
  want = jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=dn,
                                      precision="highest")
  got = layers.winograd_conv(x, k, (1, 1), padding, dimension_numbers=dn, precision="highest")
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.grad(loss(jax.lax.conv_general_dilated), (0, 1))(x, k),
                  jax.grad(loss(layers.winograd_conv), (0, 1))(x, k)):
    # ~1e-6 of the largest entry: sums of ~60 products of unit normals.
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a))))
  # Not Winograd's case: fewer channels than the threshold, a 3x5 kernel, a
  # stride: the same results by im2col / lax.
  monkeypatch.setattr(layers, "WINOGRAD_MIN_CHANNELS", 16)
  np.testing.assert_allclose(
      layers.winograd_conv(x, k, (1, 1), padding, dimension_numbers=dn, precision="highest"),
      want, rtol=1e-5, atol=1e-5)
  k35 = jnp.asarray(rng.normal(size=(3, 5, 9, 7)), jnp.float32)
  assert layers.winograd_conv(x, k35, (1, 1), ((1, 1), (2, 2)), dimension_numbers=dn).shape == (
      2, *hw, 7)
  assert layers.winograd_conv(x, k, (2, 2), padding, dimension_numbers=dn).shape == (
      jax.lax.conv_general_dilated(x, k, (2, 2), padding, dimension_numbers=dn).shape)


def test_conv_impls_give_the_same_model(monkeypatch):
  """One parameter set, both convolutions: the same logits and gradients, so a
  checkpoint trained with either runs with the other."""
  cfg = tiny_config()
  rng = np.random.default_rng(1)
  img = jnp.asarray(rng.integers(0, 256, (2, 40, 160, 1)), jnp.uint8)
  hw = jnp.array([[40, 160], [33, 100]])
  tokens = jnp.asarray(rng.integers(0, 30, (2, 6)), jnp.int32)
  out = {}
  from im2latex_jax.models import layers  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(layers, "WINOGRAD_MIN_CHANNELS", 1)  # every 3x3 layer of the tiny CNN
  for impl in ("xla", "im2col", "winograd"):
    cfg.model.conv_impl = impl
    model = models.get_model(cfg.model, 30)
    if impl == "xla":
      variables = _init(model)

    def loss(params, model=model):
      return jnp.sum(model.apply({**variables, "params": params}, img, hw, tokens) ** 2)
    out[impl] = jax.value_and_grad(loss)(variables["params"])
  la, ga = out["xla"]
  for impl in ("im2col", "winograd"):
    lb, gb = out[impl]
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
      np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-5 * float(jnp.max(jnp.abs(a))) + 1e-7)
  # 'auto': Winograd (im2col below its channel threshold) for the training
  # forward/backward on CPU, lax's convolution for inference (its forward is
  # faster there at batch 1).
  assert jax.default_backend() == "cpu"
  assert layers.conv_general_dilated("auto", train=True) is layers.winograd_conv
  assert layers.conv_general_dilated("auto", train=False) is jax.lax.conv_general_dilated
  cfg.model.conv_impl = "fft"
  with pytest.raises(ValueError, match="conv_impl 'fft'"):
    models.get_model(cfg.model, 30).init(jax.random.key(0), img, hw, tokens)


class _FlaxRowEncoder:
  """The row encoder as it was written before layers.bidirectional_lstm: two
  nn.RNN(nn.OptimizedLSTMCell), the reference of the rewrite."""

  @staticmethod
  def module(hidden, max_rows):
    import flax.linen as nn  # pylint: disable=g-import-not-at-top

    class RowEncoder(nn.Module):
      @nn.compact
      def __call__(self, feats, row_lengths):
        b, h, w, c = feats.shape
        init = self.param("row_init", nn.initializers.zeros, (max_rows, 2, 2, hidden))
        init = jnp.broadcast_to(init[jnp.minimum(jnp.arange(h), max_rows - 1)][None],
                                (b, h, 2, 2, hidden)).reshape(b * h, 2, 2, hidden)
        x, lengths = feats.reshape(b * h, w, c), jnp.repeat(row_lengths, h)
        outs = []
        for d, reverse in enumerate((False, True)):
          cell = nn.OptimizedLSTMCell(hidden, name=f"lstm_{'bw' if reverse else 'fw'}")
          outs.append(nn.RNN(cell, reverse=reverse, keep_order=True)(
              x, initial_carry=(init[:, d, 0], init[:, d, 1]), seq_lengths=lengths))
        return jnp.concatenate(outs, -1).reshape(b, h, w, 2 * hidden)
    return RowEncoder()


def test_row_encoder_equals_two_flax_rnns():
  """The one-scan bidirectional LSTM (hoisted input projections) has the
  parameters, initial values, outputs and gradients of two flax RNNs, also
  for rows shorter than the grid (the backward LSTM starts at each row's end)."""
  from im2latex_jax.models import im2markup  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.normal(size=(2, 3, 7, 5)), jnp.float32)
  lengths = jnp.array([7, 4])
  ours, ref = im2markup.RowEncoder(hidden=6, max_rows=4), _FlaxRowEncoder.module(6, 4)
  params = ours.init(jax.random.key(0), feats, lengths)["params"]
  ref_params = ref.init(jax.random.key(0), feats, lengths)["params"]
  assert jax.tree.structure(params) == jax.tree.structure(ref_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_array_equal(a, b)
  # Non-zero initial states, so the per-row init takes part in the check.
  params = jax.tree.map(lambda p: p + 0.1 * jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  g = jnp.asarray(rng.normal(size=(2, 3, 7, 12)), jnp.float32)
  run = lambda m: jax.value_and_grad(
      lambda p, x: jnp.sum(m.apply({"params": p}, x, lengths) * g), argnums=(0, 1))(params, feats)
  (la, (gpa, gxa)), (lb, (gpb, gxb)) = run(ours), run(ref)
  np.testing.assert_allclose(ours.apply({"params": params}, feats, lengths),
                             ref.apply({"params": params}, feats, lengths), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  np.testing.assert_allclose(gxa, gxb, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(gpa), jax.tree.leaves(gpb)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _flax_luong_cell(vocab, hidden, embed_dim):
  """The decoder cell as it was written before LuongDecoderCell.weights: a
  compact module around nn.OptimizedLSTMCell, the reference of the rewrite."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from im2latex_jax.models import layers  # pylint: disable=g-import-not-at-top

  class Cell(nn.Module):
    @nn.compact
    def __call__(self, enc, carry, token):
      (c, h), o_prev = carry
      emb = nn.Embed(vocab, embed_dim, name="embed")(token)
      (c, h), _ = nn.OptimizedLSTMCell(hidden, name="lstm")((c, h), jnp.concatenate([emb, o_prev], -1))
      attn = layers.masked_softmax(jnp.einsum("bnd,bd->bn", enc["keys"], h), enc["mask"])
      ctx = jnp.einsum("bn,bnd->bd", attn, enc["memory"])
      o = jnp.tanh(nn.Dense(hidden, use_bias=False, name="combine")(jnp.concatenate([ctx, h], -1)))
      return ((c, h), o), (nn.Dense(vocab, name="out")(o), attn)
  return Cell()


def test_decoder_cell_equals_flax_lstm_cell_with_and_without_precomputed_weights():
  """LuongDecoderCell (token-gate table, fused kernels) has the parameters,
  initial values, outputs and gradients of the compact nn.OptimizedLSTMCell
  cell it replaced; passing weights() computed once gives the same step, and
  so does the decoding step `decode` (regrouped products)."""
  from im2latex_jax.models import im2markup  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  vocab, hidden, emb, n = 11, 8, 5, 6
  enc = {"keys": jnp.asarray(rng.normal(size=(2, n, hidden)), jnp.float32),
         "memory": jnp.asarray(rng.normal(size=(2, n, hidden)), jnp.float32),
         "mask": jnp.array([[True] * n, [True] * 4 + [False] * 2])}
  carry = tuple(jnp.asarray(rng.normal(size=(2, hidden)), jnp.float32) for _ in range(3))
  carry = ((carry[0], carry[1]), carry[2])
  tok = jnp.array([3, 9])
  ours, ref = im2markup.LuongDecoderCell(vocab, hidden, emb), _flax_luong_cell(vocab, hidden, emb)
  params = ours.init(jax.random.key(0), enc, carry, tok)["params"]
  ref_params = ref.init(jax.random.key(0), enc, carry, tok)["params"]
  assert jax.tree.structure(params) == jax.tree.structure(ref_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_array_equal(a, b)
  weights = ours.apply({"params": params}, method=ours.weights)
  outs = [ours.apply({"params": params}, enc, carry, tok),
          ours.apply({"params": params}, enc, carry, tok, weights=weights),
          ref.apply({"params": params}, enc, carry, tok)]
  for out in outs[1:]:
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(out)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  g = jnp.asarray(rng.normal(size=(2, vocab)), jnp.float32)
  grad = lambda m: jax.grad(lambda p: jnp.sum(m.apply({"params": p}, enc, carry, tok)[1][0] * g))(params)
  for a, b in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(ref))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The decoding step (products regrouped; carry + pre = o W_o + h W_h) from
  # the same state gives the same outputs and next state, with or without
  # decode_weights computed once; its next `pre` is the regrouped product of
  # the new (h, o).
  pre = carry[1] @ weights["wi_o"] + carry[0][1] @ weights["wh"]
  dw = ours.apply({"params": params}, enc, method=ours.decode_weights)
  (ref_carry, ref_out) = outs[2]
  for w in (None, dw):
    (c2, o2, pre2), out2 = ours.apply({"params": params}, enc, (*carry, pre), tok, w,
                                      method=ours.decode)
    for a, b in zip(jax.tree.leaves(((c2, o2), out2)), jax.tree.leaves((ref_carry, ref_out))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pre2, o2 @ weights["wi_o"] + c2[1] @ weights["wh"],
                               rtol=1e-5, atol=1e-6)
