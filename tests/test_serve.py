"""Tests of the JSON API, the page, upload decoding and the predict CLI.

Fast: Flask's test client and a FakePredictor; one real waitress server for
the concurrency test.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
from PIL import Image
import pytest

from conftest_serve import encode, formula_image, formula_png, running_server
from im2latex_jax.infer import predict_cli
from im2latex_jax.infer import preprocess
from im2latex_jax.serve import app as app_lib
from im2latex_jax.serve import fake
from im2latex_jax.infer import image_io

STATIC = os.path.join(os.path.dirname(app_lib.__file__), "static")


class SpyPredictor(fake.FakePredictor):
  """Remembers the arrays it was given."""

  def __init__(self, **kw):
    super().__init__(**kw)
    self.images = []

  def predict(self, images, beam_size=1):
    self.images.extend(images)
    return super().predict(images, beam_size)


@pytest.fixture
def predictor():
  return SpyPredictor()


@pytest.fixture
def client(predictor):
  return app_lib.create_app(lambda: predictor).test_client()


def post_image(client, data: bytes, filename="f.png", **form):
  return client.post("/api/predict",
                     data={"image": (io.BytesIO(data), filename), **form})


def assert_error(resp, status: int, pattern: str):
  assert resp.status_code == status, resp.get_data(as_text=True)
  body = resp.get_json()
  assert set(body) == {"error"}
  assert re.search(pattern, body["error"]), body["error"]
  assert "Traceback" not in resp.get_data(as_text=True)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
  return (struct.pack(">I", len(payload)) + kind + payload +
          struct.pack(">I", zlib.crc32(kind + payload)))


def png_header_only(width: int, height: int) -> bytes:
  """A PNG that claims width x height but holds almost no data."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
          png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) +
          png_chunk(b"IEND", b""))


# ---- success -----------------------------------------------------------------


def test_predict_multipart(client):
  resp = post_image(client, formula_png(), beam="3")
  assert resp.status_code == 200
  body = resp.get_json()
  assert body["latex"] == "\\frac{a}{b}"
  assert body["tokens"] == list(fake.FAKE_TOKENS)
  assert body["token_probs"] == pytest.approx(list(fake.FAKE_PROBS))
  assert body["beam"] == 3
  assert body["model_id"] == "fake-frac-v1"
  assert {"preprocess", "encode", "decode", "total", "request"} <= set(
      body["timings"])
  assert body["image"].startswith("data:image/png;base64,")
  # Attention: one small PNG per token on a common grid.
  att = body["attention"]
  assert len(att["maps"]) == len(body["tokens"])
  gh, gw = att["grid"]
  for url in att["maps"]:
    m = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert m.mode == "L" and m.size == (gw, gh)
    assert np.asarray(m).max() == 255  # scaled to its peak
  pre = Image.open(io.BytesIO(base64.b64decode(body["image"].split(",", 1)[1])))
  assert gh * att["cell"] >= pre.height and gw * att["cell"] >= pre.width


def test_attention_follows_the_sweep(client):
  """The fake's attention moves left to right; the sent maps must too."""
  att = post_image(client, formula_png()).get_json()["attention"]
  peaks = [np.unravel_index(np.argmax(np.asarray(Image.open(io.BytesIO(
      base64.b64decode(u.split(",", 1)[1]))))), att["grid"])[1]
           for u in att["maps"]]
  assert peaks == sorted(peaks) and peaks[0] < peaks[-1]


def test_attention_downsampled_for_large_images():
  att = np.random.default_rng(0).random((3, 300, 1000)).astype(np.float32)
  out = app_lib.attention_json(att)
  assert out["cell"] == 8 and out["grid"] == [38, 125]
  assert app_lib.attention_json(np.zeros((0, 5, 5)))["maps"] == []


def test_predict_raw_body_beam_in_query(client):
  resp = client.post("/api/predict?beam=2", data=formula_png(),
                     content_type="image/png")
  assert resp.status_code == 200
  assert resp.get_json()["beam"] == 2


def test_default_beam_is_greedy(client):
  assert post_image(client, formula_png()).get_json()["beam"] == 1


def test_healthz_and_page(client):
  assert client.get("/healthz").get_json() == {"status": "ok",
                                                "model_id": "fake-frac-v1"}
  page = client.get("/")
  assert page.status_code == 200
  html = page.get_data(as_text=True)
  assert "fake-frac-v1" in html
  assert "Content-Security-Policy" in page.headers


def test_factory_called_once_and_lazily():
  calls = []

  def factory():
    calls.append(1)
    return fake.FakePredictor()

  client = app_lib.create_app(factory).test_client()
  assert not calls
  for _ in range(3):
    assert post_image(client, formula_png()).status_code == 200
  client.get("/healthz")
  assert len(calls) == 1


def test_no_model():
  def factory():
    raise app_lib.NoModelError("no workdir given and no shipped model")

  client = app_lib.create_app(factory).test_client()
  assert_error(post_image(client, formula_png()), 503, "no shipped model")
  health = client.get("/healthz")
  assert health.status_code == 503
  assert health.get_json()["status"] == "unavailable"
  page = client.get("/")
  assert page.status_code == 200
  html = page.get_data(as_text=True)
  assert "No model is loaded" in html and "no shipped model" in html


# ---- image modes ---------------------------------------------------------------


@pytest.mark.parametrize("mode,fmt", [
    ("L", "PNG"), ("RGB", "JPEG"), ("1", "PNG"), ("P", "GIF"), ("RGB", "BMP"),
    ("RGB", "WEBP"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("LA", "PNG"),
    ("RGBA", "PNG"), ("I;16", "PNG"), ("I;16", "TIFF"),
])
def test_accepted_modes(client, predictor, mode, fmt):
  resp = post_image(client, encode(formula_image(mode), fmt), f"f.{fmt.lower()}")
  assert resp.status_code == 200, resp.get_json()
  (crop,) = predictor.images  # what the real crop made of the decoded image
  assert isinstance(crop, preprocess.Crop) and crop.ink.ndim == 2
  # Background white, ink dark, whatever the source mode.
  assert np.median(crop.ink) > 240 and crop.ink.min() < 60


def test_alpha_composited_on_white():
  arr = image_io.decode_image(encode(formula_image("RGBA")))
  ref = np.asarray(formula_image("L"))
  assert arr.shape == ref.shape + (3,)
  np.testing.assert_array_equal(arr[..., 0] < 128, ref < 128)


def test_16_bit_scaled():
  arr = image_io.decode_image(encode(formula_image("I;16")))
  np.testing.assert_array_equal(arr, np.asarray(formula_image("L")))


def test_large_color_jpeg_decodes_to_its_luma():
  """Over image_io.MAX_WORK_PIXELS a colour JPEG is decoded as luma only
  (the fast path of a 25 MP upload); smaller ones keep their colour."""
  rng = np.random.default_rng(0)
  tile = rng.integers(0, 256, (50, 50, 3), np.uint8)
  big = np.kron(tile, np.ones((44, 44, 1), np.uint8))  # 2200^2 = 4.8 MP
  assert big.shape[0] * big.shape[1] > image_io.MAX_WORK_PIXELS
  buf = io.BytesIO()
  Image.fromarray(big).save(buf, "JPEG", quality=95)
  g = image_io.decode_image(buf.getvalue())
  assert g.shape == big.shape[:2] and g.dtype == np.uint8
  luma = big.astype(np.float64) @ [0.299, 0.587, 0.114]
  assert np.abs(g - luma).mean() < 3  # JPEG's loss, not another weighting
  small = encode(Image.fromarray(big[:500, :500]), "JPEG")
  assert image_io.decode_image(small).shape == (500, 500, 3)


def test_float_mode_rejected(client):
  assert_error(post_image(client, encode(formula_image("F"), "TIFF")), 415,
               "unsupported image mode F")


# ---- bad input ------------------------------------------------------------------


def test_not_an_image(client):
  assert_error(post_image(client, b"hello, this is text"), 415,
               "not a recognized image")


def test_wrong_content_type(client):
  resp = client.post("/api/predict", data="a=b", content_type="text/plain")
  assert_error(resp, 415, "unsupported content type 'text/plain'")


def test_unsupported_format(client):
  img = formula_image("RGB")
  assert_error(post_image(client, encode(img, "PDF")), 415,
               "not a recognized image|unsupported image format")


def test_missing_field_and_empty_body(client):
  resp = client.post("/api/predict", data={"upload": (io.BytesIO(b"x"), "a.png")})
  assert_error(resp, 400, "no file in the multipart fields 'image' or 'file' .got 'upload'")
  assert_error(client.post("/api/predict"), 400, "no image")


def test_upload_field_file_and_non_utf8_filename(client):
  # 'file' is what pix2tex-style clients send.
  resp = client.post("/api/predict", data={"file": (io.BytesIO(formula_png()), "a.png")})
  assert resp.status_code == 200, resp.get_data(as_text=True)
  # A Latin-1 filename: Werkzeug drops the part; the raw body still has it.
  body = (b'--XX\r\nContent-Disposition: form-data; name="image"; filename="f\xe9.png"'
          b'\r\nContent-Type: image/png\r\n\r\n' + formula_png() + b'\r\n--XX--\r\n')
  resp = client.post("/api/predict", data=body,
                     content_type="multipart/form-data; boundary=XX")
  assert resp.status_code == 200, resp.get_data(as_text=True)
  assert resp.get_json()["latex"] == "\\frac{a}{b}"


def test_truncated_image(client):
  data = encode(formula_image("RGB", (400, 200)), "JPEG")
  assert_error(post_image(client, data[:len(data) // 2]), 400, "truncated")
  png = encode(formula_image("L", (400, 200)))
  assert_error(post_image(client, png[:len(png) - 60]), 400,
               "truncated|corrupt")


def test_corrupt_image(client):
  data = bytearray(formula_png())
  idat = data.index(b"IDAT")
  data[idat + 8:idat + 24] = b"\xff" * 16
  assert_error(post_image(client, bytes(data)), 400, "corrupt")


def test_upload_too_large(client):
  big = b"\x00" * (app_lib.MAX_UPLOAD_BYTES + 1)
  assert_error(post_image(client, big), 413, "upload too large.*10 MB")
  resp = client.post("/api/predict", data=big, content_type="image/png")
  assert_error(resp, 413, "upload too large")


def test_decompression_bomb(client):
  # Header says 100k x 100k: Pillow's own bomb check fires while opening.
  assert_error(post_image(client, png_header_only(100_000, 100_000)), 413,
               "too large")
  # 30 MP: under Pillow's limit, over ours; refused before decoding pixels.
  assert_error(post_image(client, png_header_only(6000, 5000)), 413,
               "6000x5000.*limit")


def test_zero_size(client):
  assert_error(post_image(client, b""), 422, "empty")
  resp = client.post("/api/predict", data=b"", content_type="image/png")
  assert_error(resp, 422, "empty")


def test_zero_dimension_png(client):
  # Pillow refuses a zero width while parsing the header.
  assert_error(post_image(client, png_header_only(0, 10)), 400,
               "corrupt PNG file")


def test_blank_and_tiny_images(client):
  blank = encode(Image.new("L", (200, 60), 255))
  assert_error(post_image(client, blank), 422, "blank")
  tiny = encode(Image.new("L", (2, 2), 0))
  assert_error(post_image(client, tiny), 422, "too small")
  # 10,000 separate dots: the real crop's "not a formula" refusal.
  dots = np.full((400, 400), 255, np.uint8)
  dots[::4, ::4] = 0
  assert_error(post_image(client, encode(Image.fromarray(dots))), 422,
               "does not look like a formula")


@pytest.mark.parametrize("beam,pattern", [
    ("0", "out of range"), ("11", "out of range"), ("-3", "out of range"),
    ("abc", "must be an integer"), ("2.5", "must be an integer"),
])
def test_bad_beam(client, beam, pattern):
  assert_error(post_image(client, formula_png(), beam=beam), 400, pattern)
  resp = client.post(f"/api/predict?beam={beam}", data=formula_png(),
                     content_type="image/png")
  assert_error(resp, 400, pattern)


def test_unexpected_exception_is_json_without_trace():
  class Broken(fake.FakePredictor):
    def predict(self, images, beam_size=1):
      raise RuntimeError("secret internal detail")

  client = app_lib.create_app(Broken).test_client()
  resp = post_image(client, formula_png())
  assert_error(resp, 500, "internal error")
  assert "secret" not in resp.get_data(as_text=True)


def test_http_errors_are_json(client):
  assert_error(client.get("/nope"), 404, "Not Found")
  assert_error(client.get("/api/predict"), 405, "Method Not Allowed")


# ---- static assets ----------------------------------------------------------------


def test_assets_served_locally(client):
  html = client.get("/").get_data(as_text=True)
  refs = re.findall(r'(?:src|href)="([^"]+)"', html)
  assert refs and not [r for r in refs if "//" in r]  # no CDN
  for ref in refs:
    assert client.get(ref).status_code == 200, ref


def test_katex_fonts_present():
  css = open(os.path.join(STATIC, "vendor/katex/katex.min.css")).read()
  fonts = set(re.findall(r"url\((fonts/[^)]+)\)", css))
  assert fonts and all(f.endswith(".woff2") for f in fonts)
  for f in fonts:
    assert os.path.isfile(os.path.join(STATIC, "vendor/katex", f)), f
  for lib in ("bootstrap", "katex"):
    assert os.path.isfile(os.path.join(STATIC, "vendor", lib, "LICENSE"))


# ---- concurrency --------------------------------------------------------------------


def _post(url: str, data: bytes):
  req = urllib.request.Request(url + "/api/predict", data=data,
                               headers={"Content-Type": "image/png"})
  try:
    with urllib.request.urlopen(req, timeout=30) as resp:
      return resp.status, json.load(resp)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def test_concurrent_requests_on_waitress():
  predictor = fake.FakePredictor(delay_s=0.1)
  app = app_lib.create_app(lambda: predictor)
  good, blank = formula_png(), encode(Image.new("L", (200, 60), 255))
  bodies = [blank if i == 7 else good for i in range(20)]
  with running_server(app, threads=8) as url:
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
      results = list(pool.map(lambda b: _post(url, b), bodies))
  for i, (status, body) in enumerate(results):
    if i == 7:  # a bad image in a coalesced batch fails only its request
      assert status == 422 and "blank" in body["error"]
    else:
      assert status == 200, body
      assert body["latex"] == "\\frac{a}{b}"
  # The blank image was refused in its own request thread, before the queue.
  assert sum(predictor.calls) == 19
  assert max(predictor.calls) > 1  # requests were coalesced into batches


def test_batcher_isolates_a_bad_image():
  predictor = fake.FakePredictor()
  holder = app_lib._PredictorHolder(lambda: predictor)
  batcher = app_lib._Batcher(holder)
  good = np.asarray(formula_image())
  blank = np.full((40, 40), 255, np.uint8)
  futures = [concurrent.futures.Future() for _ in range(3)]
  batcher._run([(good, 1, futures[0]), (blank, 1, futures[1]),
                (good, 1, futures[2])], beam=1)
  assert futures[0].result().latex == futures[2].result().latex
  with pytest.raises(ValueError, match="blank"):
    futures[1].result()
  assert predictor.calls == [3, 1, 1, 1]


# ---- predict CLI ---------------------------------------------------------------------


@pytest.fixture
def image_dir(tmp_path):
  d = tmp_path / "imgs"
  d.mkdir()
  for name in ("c.png", "a.png", "b.jpg"):
    formula_image("RGB").save(d / name)
  (d / "notes.txt").write_text("not an image")
  (d / "broken.png").write_bytes(b"not really a png")
  return d


def run_cli(argv, predictor=None):
  out, err = io.StringIO(), io.StringIO()
  rc = predict_cli.main(["im2latex-jax predict"] + argv, predictor=predictor or fake.FakePredictor(),
                        out=out, err=err)
  return rc, out.getvalue().splitlines(), err.getvalue().splitlines()


def test_cli_directory(image_dir):
  rc, out, err = run_cli([str(image_dir)])
  assert rc == 1  # broken.png
  assert [line.split("\t") for line in out] == [
      [str(image_dir / n), "\\frac{a}{b}"]
      for n in ("a.png", "b.jpg", "c.png")]
  assert len(err) == 1 and "broken.png: error: not a recognized image" in err[0]


def test_cli_json_and_batches(image_dir):
  (image_dir / "broken.png").unlink()
  predictor = fake.FakePredictor()
  rc, out, err = run_cli([str(image_dir), str(image_dir / "a.png"), "--json",
                          "--beam", "4", "--batch-size", "2"], predictor)
  assert rc == 0 and not err
  records = [json.loads(line) for line in out]
  assert [os.path.basename(r["path"]) for r in records] == [
      "a.png", "b.jpg", "c.png", "a.png"]
  for r in records:
    assert {"path", "latex", "tokens", "token_probs", "logprob",
            "timings"} <= set(r)
    assert r["beam"] == 4 and len(r["tokens"]) == len(r["token_probs"])
  assert predictor.calls == [2, 2]


def test_cli_bad_images_continue(tmp_path, image_dir):
  blank = tmp_path / "blank.png"
  Image.new("L", (100, 40), 255).save(blank)
  rc, out, err = run_cli([str(image_dir / "a.png"), str(blank),
                          str(tmp_path / "missing.png"), str(image_dir / "c.png")])
  assert rc == 1
  assert len(out) == 2
  assert any("blank.png: error:" in e and "blank" in e for e in err)
  assert any("missing.png: error: no such file" in e for e in err)


def test_cli_stdin(monkeypatch):
  class Stdin:
    buffer = io.BytesIO(formula_png())

  monkeypatch.setattr(sys, "stdin", Stdin)
  rc, out, _ = run_cli(["-"])
  assert rc == 0 and out == ["-\t\\frac{a}{b}"]


def test_cli_usage_errors(image_dir):
  assert run_cli([str(image_dir), "--beam", "0"])[0] == 2
  assert run_cli(["-", "-"])[0] == 2


# ---- entry points with the real loader swapped out ----------------------------------


@pytest.fixture
def stub_loader(monkeypatch):
  """Replaces im2latex_jax.infer.predictor with a module whose loader we control."""
  import types
  mod = types.ModuleType("im2latex_jax.infer.predictor")
  mod.NoModelError = app_lib.NoModelError
  mod.load_predictor = lambda workdir=None: fake.FakePredictor()
  monkeypatch.setitem(sys.modules, "im2latex_jax.infer.predictor", mod)
  return mod


def test_serve_main_bad_workdir(stub_loader, capsys):
  def bad(workdir=None):
    raise ValueError(f"{workdir} has no checkpoint")

  stub_loader.load_predictor = bad
  assert app_lib.main(["im2latex-jax serve", "--workdir", "/nope",
                       "--port", "0"]) == 2
  assert "/nope has no checkpoint" in capsys.readouterr().out


def test_cli_uses_load_predictor(stub_loader, image_dir, capsys):
  (image_dir / "broken.png").unlink()
  asked = []
  stub_loader.load_predictor = lambda workdir=None: asked.append(workdir) or fake.FakePredictor()
  assert predict_cli.main(["im2latex-jax predict", str(image_dir)]) == 0
  assert len(capsys.readouterr().out.splitlines()) == 3
  assert asked == [None]  # no --workdir: the loader's default (the shipped model)

  def none(workdir=None):
    raise stub_loader.NoModelError("no workdir given and no shipped model")

  stub_loader.load_predictor = none
  assert predict_cli.main(["im2latex-jax predict", str(image_dir)]) == 2
  assert "no shipped model" in capsys.readouterr().err


def test_cli_answers_idiomatic_latex_unless_asked_for_tokens(image_dir):
  rc, out, _ = run_cli([str(image_dir / "a.png")])
  assert rc == 0 and out[0].split("\t")[1] == "\\frac{a}{b}"
  rc, out, _ = run_cli([str(image_dir / "a.png"), "--format", "tokens"])
  assert rc == 0 and out[0].split("\t")[1] == "\\frac { a } { b }"
  rc, out, _ = run_cli([str(image_dir / "a.png"), "--format", "tokens", "--json"])
  record = json.loads(out[0])
  assert record["latex"] == "\\frac { a } { b }"
  assert record["tokens"] == ["\\frac", "{", "a", "}", "{", "b", "}"]


def test_cli_good_garbage_missing(tmp_path, image_dir):
  garbage = tmp_path / "garbage.png"
  garbage.write_bytes(bytes(range(256)) * 4)
  missing = tmp_path / "missing.png"
  rc, out, err = run_cli([str(image_dir / "a.png"), str(garbage), str(missing), "--json"])
  assert rc == 1  # not every file succeeded
  records = [json.loads(line) for line in out]
  assert records[0]["path"].endswith("a.png") and records[0]["latex"] == "\\frac{a}{b}"
  assert records[0]["low_confidence"] is False and records[0]["warnings"] == []
  assert records[1]["path"] == str(garbage) and "error" in records[1]
  assert records[2]["path"] == str(missing) and "no such file" in records[2]["error"]
  assert len(err) == 2 and str(garbage) in err[0] and str(missing) in err[1]


@pytest.mark.parametrize("flag,value,pattern", [
    ("--port", "99999", "--port 99999 is out of range"),
    ("--port", "-1", "--port -1 is out of range"),
    ("--threads", "0", "--threads 0 is out of range"),
    ("--timeout", "0", "--timeout 0.0 is out of range"),
])
def test_serve_refuses_bad_options_before_loading(stub_loader, capsys, flag, value, pattern):
  def never(workdir=None):
    raise AssertionError("the model must not be loaded")

  stub_loader.load_predictor = never
  assert app_lib.main(["im2latex-jax serve", flag, value]) == 2
  assert pattern in capsys.readouterr().err


def test_serve_port_in_use_is_one_line_before_loading(stub_loader, capsys):
  import socket  # pylint: disable=g-import-not-at-top

  def never(workdir=None):
    raise AssertionError("the model must not be loaded")

  stub_loader.load_predictor = never
  with socket.create_server(("127.0.0.1", 0)) as busy:
    port = busy.getsockname()[1]
    assert app_lib.main(["im2latex-jax serve", "--port", str(port)]) == 2
  err = capsys.readouterr().err
  assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_bad_image_is_refused_in_its_request_thread(client, predictor):
  """Preprocessing (Predictor.prepare) runs in the request's thread: a
  refused image never reaches the predictor thread, so it delays no one."""
  resp = post_image(client, encode(Image.new("L", (200, 60), 255)))
  assert_error(resp, 422, "blank")
  assert predictor.calls == []
  assert post_image(client, formula_png()).status_code == 200
  assert predictor.calls == [1]


def test_request_time_limit_and_stuck_predictor_health():
  predictor = fake.FakePredictor(delay_s=1.5)
  app = app_lib.create_app(lambda: predictor, timeout_s=0.3)
  with running_server(app, threads=4) as url:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      slow = pool.submit(_post, url, formula_png())
      # The first call is running for longer than the limit: health says so.
      deadline = time.monotonic() + 5
      while True:
        try:
          urllib.request.urlopen(url + "/healthz")
        except urllib.error.HTTPError as e:
          health = json.loads(e.read())
          assert e.code == 503
          break
        assert time.monotonic() < deadline, "healthz never reported the stuck call"
        time.sleep(0.05)
      assert health["status"] == "stuck" and "request time limit (0.3 s)" in health["error"]
      status, body = slow.result()
    assert status == 503 and "time limit (0.3 s)" in body["error"]
    # When the call ends the server is healthy again.
    deadline = time.monotonic() + 5
    while True:
      try:
        assert json.loads(urllib.request.urlopen(url + "/healthz").read())["status"] == "ok"
        break
      except urllib.error.HTTPError:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_timed_out_request_drops_its_queued_work():
  predictor = fake.FakePredictor()
  batcher = app_lib._Batcher(app_lib._PredictorHolder(lambda: predictor))
  good = np.asarray(formula_image())
  futures = [concurrent.futures.Future() for _ in range(2)]
  futures[0].cancel()  # what predict() does when its wait times out
  batcher._run([(good, 1, futures[0]), (good, 1, futures[1])], beam=1)
  assert predictor.calls == [1] and futures[1].result().latex
