"""The real Predictor on a tiny model trained for 4 steps in a tmp workdir.

Checks the contract the server and CLI rely on (fields, shapes, attention
that sums to 1 over the image), that bucketed batching gives the same tokens
as one image at a time, that repeated shapes never recompile, the shipped-model
lookup, and the JSON API backed by the real model.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import urllib.request

import jax
from jax._src import monitoring as jax_monitoring
import numpy as np
from PIL import Image, ImageDraw
import pytest

from conftest import tiny_config
from conftest_serve import encode, running_server
from im2latex_jax.infer import inference
from im2latex_jax.infer import predictor as predictor_lib
from im2latex_jax.infer import preprocess
from im2latex_jax.latex.idiomatic import to_idiomatic
from im2latex_jax import train
from im2latex_jax.data import core
from im2latex_jax.data import vocab as vocab_lib
from im2latex_jax.serve import app as app_lib

TOKENS = ("a", "b", "c", "x", "y", "+", "-", "=", "^", "_", "{", "}", "\\frac", "1", "2")
MAX_LEN = 12


def _batches(vocab, rng, b=8, h=40, w=160, t=10):
  while True:
    tokens = np.zeros((b, t), np.int32)
    for i in range(b):
      n = int(rng.integers(2, t - 2))
      tokens[i, 0] = vocab_lib.BOS
      tokens[i, 1:n + 1] = rng.integers(4, len(vocab), n)
      tokens[i, n + 1] = vocab_lib.EOS
    img = np.full((b, h, w, 1), 255, np.uint8)
    img[:, 4:30, 4:120] = rng.integers(0, 256, (b, 26, 116, 1))
    yield {"image": img, "image_hw": np.tile([[h, w]], (b, 1)).astype(np.int32),
           "tokens": tokens, "weight": np.ones((b,), np.float32)}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
  """A workdir with a checkpoint of a tiny im2markup model (4 train steps)."""
  wd = tmp_path_factory.mktemp("predictor_run")
  cfg = tiny_config()
  cfg.input.buckets = "im2markup"  # the predictor places images on every bucket
  cfg.num_train_steps = 4
  cfg.eval_every_steps = 2
  cfg.log_every_steps = 2
  cfg.evals.max_decode_len = MAX_LEN
  vocab = vocab_lib.Vocab(list(vocab_lib.SPECIALS) + list(TOKENS))
  rng = np.random.default_rng(0)
  eval_batch = next(_batches(vocab, rng, b=16))
  data = core.BatchSource(vocab, train=_batches(vocab, rng),
                         eval={cfg.input.eval_split: lambda: [eval_batch]})
  train.train_and_evaluate(cfg, str(wd), data=data)
  return str(wd)


@pytest.fixture(scope="session")
def predictor(workdir):
  # One reading per image at the dataset-calibrated estimate, so the batching
  # and compilation tests see exactly one program call per image group; the
  # glyph-size search has tests of its own.
  return predictor_lib.load_predictor(workdir, scale_rounds=())


def formula(text: str, size=(200, 40), seed: int = 0) -> np.ndarray:
  """A dark-on-white drawing of `text` plus a rule, uint8 [H, W, 3]."""
  img = Image.new("RGB", size, (255, 255, 255))
  d = ImageDraw.Draw(img)
  d.text((6, 4), text, fill=(0, 0, 0))
  d.line((6, 24, 6 + 7 * len(text) * (1 + seed % 2), 24), fill=(0, 0, 0), width=1)
  return np.asarray(img)


SHORT = [formula("a+b", seed=0), formula("x=y", seed=1), formula("a-b", seed=1)]
LONG = formula("a+b+c+d+e+f+g+h+i+j+k+l+m+n+o+p+q+r+s", size=(400, 40))


def test_images_land_on_two_buckets(predictor):
  shapes = {predictor.preprocess(im).shape for im in SHORT}
  assert len(shapes) == 1
  assert predictor.preprocess(LONG).shape not in shapes
  assert all(s in predictor.buckets for s in shapes)


def test_prediction_fields_and_shapes(predictor):
  [p] = predictor.predict([SHORT[0]])
  h, w = p.image.shape
  assert p.image.dtype == np.uint8 and (h, w) in predictor.canvases
  assert p.latex == " ".join(p.tokens)
  assert 0 < len(p.tokens) <= MAX_LEN
  assert len(p.token_probs) == len(p.tokens)
  assert all(0.0 <= q <= 1.0 for q in p.token_probs)
  assert p.attention.dtype == np.float32
  assert p.attention.shape == (len(p.tokens), h, w)
  np.testing.assert_allclose(p.attention.sum(axis=(1, 2)), 1.0, atol=1e-4)
  assert p.attention.min() >= 0
  # Greedy: the sequence log-prob is the tokens' plus EOS's (if emitted).
  assert p.logprob <= np.log(p.token_probs).sum() + 1e-4
  assert {"preprocess", "encode_decode", "postprocess", "total"} <= set(p.timings)
  assert all(v >= 0 for v in p.timings.values())


def test_batched_equals_one_at_a_time_with_mixed_buckets(predictor):
  images = [SHORT[0], LONG, SHORT[1], SHORT[2], SHORT[0], SHORT[1]]
  together = predictor.predict(images)
  alone = [predictor.predict([im])[0] for im in images]
  for t, a in zip(together, alone):
    assert t.tokens == a.tokens
    np.testing.assert_allclose(t.token_probs, a.token_probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(t.attention, a.attention, rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(t.image, a.image)
  # 5 short images share one padded batch of 8; the long one ran alone.
  short, long_ = together[0].image.shape, together[1].image.shape
  keys = predictor.compiled_keys
  assert (1, short, 8) in keys and (1, long_, 1) in keys and (1, short, 1) in keys


def test_no_recompile_for_repeated_shapes(predictor):
  images = [SHORT[0], LONG, SHORT[1]]
  predictor.predict(images)
  keys = predictor.compiled_keys
  events = []

  def listener(event, duration, **_):
    if event.startswith("/jax/core/compile"):
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    predictor.predict(images)
    predictor.predict(images[::-1])
  finally:
    jax_monitoring.unregister_event_duration_listener(listener)
  assert not events
  assert predictor.compiled_keys == keys


def test_beam_search_has_probs_and_attention(predictor):
  [greedy] = predictor.predict([SHORT[0]], beam_size=1)
  [beam] = predictor.predict([SHORT[0]], beam_size=3)
  assert beam.latex == " ".join(beam.tokens)
  assert len(beam.token_probs) == len(beam.tokens)
  assert beam.attention.shape == (len(beam.tokens),) + beam.image.shape
  np.testing.assert_allclose(beam.attention.sum(axis=(1, 2)), 1.0, atol=1e-4)
  assert beam.logprob >= greedy.logprob - 1e-4
  # The teacher-forced rescoring agrees with the search's own score.
  [out], _ = predictor._run(beam.image.shape, [beam.image], 3, 1)  # pylint: disable=protected-access
  length = int(np.sum(np.cumsum(out["tokens"] == vocab_lib.EOS) == 0) + 1)
  length = min(length, MAX_LEN)
  np.testing.assert_allclose(out["token_logprobs"][:length].sum(), out["logprobs"],
                             rtol=1e-4, atol=1e-4)


def test_more_images_than_the_largest_batch(predictor):
  small = predictor_lib.Predictor(predictor._loaded, batch_sizes=(1, 2),  # pylint: disable=protected-access
                                 scale_rounds=())
  images = [SHORT[0], SHORT[1], SHORT[2], SHORT[0], SHORT[1]]
  preds = small.predict(images)
  bucket = preds[0].image.shape
  assert sorted(small.compiled_keys) == [(1, bucket, 1), (1, bucket, 2)]
  assert [p.tokens for p in preds] == [p.tokens for p in predictor.predict(images)]


def test_bad_image_and_bad_beam(predictor):
  blank = np.full((40, 200), 255, np.uint8)
  with pytest.raises(preprocess.ImageError, match="blank"):
    predictor.predict([SHORT[0], blank])
  with pytest.raises(ValueError, match="beam_size"):
    predictor.predict([SHORT[0]], beam_size=0)
  assert predictor.predict([]) == []


def test_attention_to_image_spreads_cells_evenly():
  att = np.zeros((1, 6 * 25), np.float32)
  att[0, 0] = 0.5   # top-left cell
  att[0, -1] = 0.5  # bottom-right cell
  img = predictor_lib.attention_to_image(att, (6, 25), (50, 200))
  assert img.shape == (1, 50, 200)
  np.testing.assert_allclose(img.sum(), 1.0, rtol=1e-6)
  # 50 rows over 6 cells: cell 0 holds rows 0..8 (9 rows), the last 41..49.
  assert img[0, 0, 0] == pytest.approx(0.5 / (9 * 8))
  assert img[0, 8, 7] > 0 and img[0, 9, 0] == 0 and img[0, 0, 8] == 0
  assert img[0, 49, 199] > 0 and img[0, 40, 199] == 0


def test_plan_batches():
  plan = predictor_lib.plan_batches
  assert plan(1) == [(1, 1)]
  assert plan(2) == [(1, 1), (1, 1)]  # 6 of 8 would be padding
  assert plan(5) == [(5, 8)]
  assert plan(12) == [(8, 8), (4, 8)]
  assert plan(20) == [(20, 32)]
  assert plan(70) == [(32, 32), (32, 32), (6, 8)]
  assert plan(5, (1, 2)) == [(2, 2), (2, 2), (1, 1)]
  for n in range(1, 80):
    assert sum(c for c, _ in plan(n)) == n
    assert all(c <= b and b in predictor_lib.BATCH_SIZES for c, b in plan(n))


def test_no_model_error(monkeypatch, tmp_path):
  monkeypatch.setattr(predictor_lib, "SHIPPED_MODEL_DIR", str(tmp_path / "model"))
  monkeypatch.delenv(predictor_lib.MODEL_ENV, raising=False)
  with pytest.raises(predictor_lib.NoModelError, match="--workdir"):
    predictor_lib.load_predictor(None)


def test_shipped_model_and_env_var(monkeypatch, workdir, tmp_path):
  monkeypatch.delenv(predictor_lib.MODEL_ENV, raising=False)
  monkeypatch.setattr(predictor_lib, "SHIPPED_MODEL_DIR", workdir)
  assert predictor_lib.load_predictor(None).model_id.endswith("@4")
  monkeypatch.setattr(predictor_lib, "SHIPPED_MODEL_DIR", str(tmp_path / "none"))
  monkeypatch.setenv(predictor_lib.MODEL_ENV, workdir)
  assert predictor_lib.default_model_dir() == workdir
  monkeypatch.setenv(predictor_lib.MODEL_ENV, str(tmp_path))
  with pytest.raises(ValueError, match="config.json"):
    predictor_lib.load_predictor(None)


def test_package_default_is_the_v2_model(monkeypatch):
  """With no --workdir and no IM2LATEX_MODEL, predict and serve read the
  shipped v2 (v1 fine-tuned on the mixed renders, blended 0.4/0.6 with v1;
  model card), not v1 (scripts/get_v1_model.sh)."""
  monkeypatch.delenv(predictor_lib.MODEL_ENV, raising=False)
  if predictor_lib.default_model_dir() is None:
    pytest.skip("no shipped model")
  assert predictor_lib.default_model_dir() == predictor_lib.SHIPPED_MODEL_DIR
  loaded = inference.load_model(predictor_lib.SHIPPED_MODEL_DIR)
  assert loaded.model_id == "screens3@1040*0.4+shipped@8000*0.6"
  assert loaded.config.init_from.startswith("im2latex_jax/assets/model at commit 8c54d1f (v1")


def test_bad_workdir_is_a_value_error(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    predictor_lib.load_predictor(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="no config.json"):
    predictor_lib.load_predictor(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"optim": {}}))
  with pytest.raises(ValueError):
    predictor_lib.load_predictor(str(tmp_path))


# ---- the JSON API with the real model ------------------------------------------


def test_api_with_real_predictor(predictor):
  client = app_lib.create_app(lambda: predictor).test_client()
  png = encode(Image.fromarray(SHORT[0]))
  for beam in ("1", "3"):
    resp = client.post("/api/predict", data={"image": (io.BytesIO(png), "f.png"),
                                             "beam": beam})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["model_id"] == predictor.model_id
    assert body["latex"] == to_idiomatic(body["tokens"])
    assert len(body["token_probs"]) == len(body["tokens"])
    assert len(body["attention"]["maps"]) == len(body["tokens"])
    assert body["image"].startswith("data:image/png;base64,")
    assert body["beam"] == int(beam)
    assert {"preprocess", "encode_decode", "total", "request"} <= set(body["timings"])
  assert client.get("/healthz").get_json() == {"status": "ok",
                                                "model_id": predictor.model_id}


def test_concurrent_requests_on_real_model(predictor):
  app = app_lib.create_app(lambda: predictor)
  pngs = [encode(Image.fromarray(im)) for im in SHORT + [LONG]]
  expected = {i: predictor.predict([im])[0].idiomatic
              for i, im in enumerate(SHORT + [LONG])}

  def post(i):
    req = urllib.request.Request(url + "/api/predict", data=pngs[i % 4],
                                 headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(req, timeout=60) as resp:
      return i, resp.status, json.load(resp)

  with running_server(app, threads=8) as url:
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
      results = list(pool.map(post, range(20)))
  assert len(results) == 20
  for i, status, body in results:
    assert status == 200
    assert body["latex"] == expected[i % 4]


def test_trim_loop_cuts_a_periodic_tail_to_one_period():
  from im2latex_jax.infer.predictor import trim_loop
  head = [10, 11, 12]
  assert trim_loop(head + [7] * 30, span=24) == (head + [7], True)
  assert trim_loop(head + [7, 8] * 15, span=24) == (head + [7, 8], True)
  # A short repeat (a legitimate `& & &` or `0 & 0 &`) is kept.
  assert trim_loop(head + [7, 8] * 5, span=24) == (head + [7, 8] * 5, False)
  assert trim_loop([], span=24) == ([], False)
  assert trim_loop(head + [7] * 30, span=0) == (head + [7] * 30, False)  # 0: never


def test_loop_span_zero_keeps_a_looped_reading_whole(predictor):
  # benchmarks/latency.py decodes a fixed length with loop_span=0.
  import copy
  from im2latex_jax.data import vocab as vocab_lib
  out = {"tokens": np.array([10, 11] + [7] * 30 + [vocab_lib.EOS, 7])}
  assert predictor._kept(out)[1:] == ([10, 11, 7], True)
  fixed = copy.copy(predictor)
  fixed.loop_span = 0
  assert fixed._kept(out) == (list(range(32)), [10, 11] + [7] * 30, False)


def test_wide_formula_is_read_on_an_overflow_canvas(predictor):
  # 1,700 px wide at the training scale: wider than every training bucket.
  wide = formula("a+b=" * 60, size=(1700, 40))
  [p] = predictor.predict_each([wide], scales=[1.0])
  assert not isinstance(p, Exception), p
  h, w = p.image.shape
  assert w in preprocess.OVERFLOW_WIDTHS and w >= 1700
  assert h in preprocess.OVERFLOW_HEIGHTS or (h, w) in predictor.canvases
  assert p.attention.shape[1:] == (h, w)


@pytest.fixture(scope="module")
def shipped():
  if predictor_lib.default_model_dir() is None:
    pytest.skip("no shipped model")
  return predictor_lib.load_predictor(None)


def _embedded_image(k=3):
  import tarfile  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(vocab_lib.__file__), "embedded",
                      "formula_images_processed.tar.gz")
  with tarfile.open(path) as tar:
    members = [m for m in tar if m.isfile()]
    with Image.open(io.BytesIO(tar.extractfile(members[k]).read())) as im:
      return im.convert("L")


@pytest.mark.slow
def test_glyph_size_search_is_scale_free(shipped):
  # One dataset formula at 1x, 1.5x, 2x and 3x: the search lands each on the
  # same glyph size (scale x factor constant within one refinement step,
  # ~12 %), so the model sees the same normalized image size.
  im = _embedded_image()
  factors = (1.0, 1.5, 2.0, 3.0)
  ims = [np.asarray(im.resize((round(im.width * f), round(im.height * f)), Image.LANCZOS))
         for f in factors]
  preds = shipped.predict_each(ims)
  assert not any(isinstance(p, Exception) for p in preds), preds
  sizes = [p.scale * f for p, f in zip(preds, factors)]
  for s in sizes:
    assert abs(np.log(s / sizes[0])) < 0.13, sizes
  heights = [np.ptp(np.nonzero((p.image < 128).any(1))[0]) for p in preds]
  assert max(heights) - min(heights) <= 0.15 * max(heights) + 2, heights


def test_search_keeps_one_of_the_scales_read(predictor):
  search = predictor_lib.Predictor(predictor._loaded)  # pylint: disable=protected-access
  [p] = search.predict_each([SHORT[0]])
  crop = preprocess.crop_formula(SHORT[0])
  first = preprocess.scale_candidates(crop, preprocess.SCALE_ROUNDS[0])
  assert len(first) >= 3
  # The winner is one of the scales read: round 1, or round 2 around one.
  assert p.scale is not None and min(abs(np.log(p.scale / s)) for s in first) <= 0.13
  # Beam: the winning scale is decoded again with the beam.
  [b] = search.predict_each([SHORT[0]], beam_size=2)
  assert b.scale == p.scale
  # A known scale is read once, at that scale, in full.
  [q] = search.predict_each([SHORT[0]], scales=[1.0])
  assert q.scale == 1.0


def test_prepared_crops_read_as_the_images(predictor):
  """prepare() (the server's request-thread step) then predict_each ==
  predict_each on the images; a large input's scale is the input's."""
  search = predictor_lib.Predictor(predictor._loaded)  # pylint: disable=protected-access
  direct = search.predict_each(SHORT[:2])
  prepared = search.predict_each([search.prepare(im) for im in SHORT[:2]])
  for a, b in zip(direct, prepared):
    assert (a.latex, a.scale) == (b.latex, b.scale)
    np.testing.assert_array_equal(a.image, b.image)
  small = SHORT[0][..., 0]  # black on white: every channel is the gray image
  canvas = np.full((1250, 1250), 255, np.uint8)
  canvas[100:100 + small.shape[0], 100:100 + small.shape[1]] = small
  big = np.kron(canvas, np.ones((2, 2), np.uint8))  # reduced by 2 before cropping
  [p_small] = search.predict_each([canvas], scales=[1.0])
  [p_big] = search.predict_each([big], scales=[0.5])
  assert p_big.scale == 0.5 and p_big.latex == p_small.latex
  np.testing.assert_array_equal(p_big.image, p_small.image)


def test_confident_first_round_skips_the_rest(predictor):
  """confident_score: an image whose best first-round reading is at least
  that sure is not read again; None reads every round."""
  loaded = predictor._loaded  # pylint: disable=protected-access
  every = predictor_lib.Predictor(loaded, confident_score=None)
  sure = predictor_lib.Predictor(loaded, confident_score=-1e9)  # any reading is sure
  never = predictor_lib.Predictor(loaded, confident_score=0.0)  # no reading is (scores < 0)
  [a] = every.predict_each([SHORT[1]])
  [b] = sure.predict_each([SHORT[1]])
  [c] = never.predict_each([SHORT[1]])
  assert {r["round"] for r in a.readings} == {0, 1}
  assert {r["round"] for r in b.readings} == {0}
  assert b.readings == [r for r in a.readings if r["round"] == 0]
  assert c.readings == a.readings and c.latex == a.latex


def test_search_readings_decoded_together_equal_one_bucket_at_a_time(predictor):
  """The search encodes each reading on its own canvas and decodes a round's
  readings in one batch (padded, masked encodings): the same tokens, scores
  and attention as reading each canvas group on its own."""
  search = predictor_lib.Predictor(predictor._loaded)  # pylint: disable=protected-access
  crops = [preprocess.crop_formula(im) for im in (SHORT[0], LONG, SHORT[2])]
  jobs = [(preprocess.place(c.ink, s, search.buckets), s, 0.0)
          for c in crops for s in (0.7, 1.0, 1.4)]
  assert len({g.shape for g, _, _ in jobs}) >= 3  # several canvases in one round
  together = search._read_together(jobs)  # pylint: disable=protected-access
  alone = search._predict_normalized(jobs, 1, attention=False)  # pylint: disable=protected-access
  for (p, raw), (q, ref) in zip(together, alone):
    assert p.tokens == q.tokens and p.scale == q.scale and p.looped == q.looped
    np.testing.assert_allclose(p.logprob, q.logprob, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p.token_probs, q.token_probs, rtol=1e-4, atol=1e-6)
    assert raw["attention"].shape == ref["attention"].shape
    np.testing.assert_allclose(raw["attention"], ref["attention"], rtol=1e-3, atol=1e-6)
  encoders, decoders = search.search_compiled_keys
  assert encoders and len(decoders) == 1  # 9 readings: one decoder call of batch 32
  assert decoders[0][0] == 32
  # The whole search with shared decoding == the search reading bucket by bucket.
  apart = predictor_lib.Predictor(predictor._loaded, shared_decoding=False)  # pylint: disable=protected-access
  for a, b in zip(search.predict_each(SHORT[:2]), apart.predict_each(SHORT[:2])):
    assert (a.latex, a.scale) == (b.latex, b.scale)
    assert [r["scale"] for r in a.readings] == [r["scale"] for r in b.readings]
    np.testing.assert_allclose([r["score"] for r in a.readings],
                               [r["score"] for r in b.readings], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.attention, b.attention, rtol=1e-3, atol=1e-6)


def test_fine_canvases_read_the_same_pixels_with_less_padding(predictor):
  """Predictor(canvases='fine'), the default, encodes each search candidate
  on the smallest canvas of preprocess.canvas_ladder that holds it: the
  training bucket's top-left corner, so smaller; the shared decoder still
  compiles only decode_cells' sizes."""
  loaded = predictor._loaded  # pylint: disable=protected-access
  fine = predictor_lib.Predictor(loaded)
  assert fine.canvases == preprocess.canvas_ladder(fine.buckets)
  coarse = predictor_lib.Predictor(loaded, canvases="buckets")
  assert coarse.canvases == coarse.buckets
  scales = [1.0, 0.8, 1.0]
  a = fine.predict_each([SHORT[0], LONG, SHORT[1]], scales=scales)
  b = coarse.predict_each([SHORT[0], LONG, SHORT[1]], scales=scales)
  for p, q in zip(a, b):
    h, w = p.image.shape
    assert p.image.shape in fine.canvases and p.image.size <= q.image.size
    np.testing.assert_array_equal(p.image, q.image[:h, :w])
  assert any(p.image.size < q.image.size for p, q in zip(a, b))
  fine.predict_each(SHORT + [LONG])  # the search
  _, decoders = fine.search_compiled_keys
  assert decoders and all(cells == predictor_lib.decode_cells(cells) for _, cells in decoders)
  with pytest.raises(ValueError, match="canvases"):
    predictor_lib.Predictor(loaded, canvases="tight")
