"""The web page, JSON API and server for image-to-LaTeX prediction.

    im2latex-jax serve --workdir /tmp/im2latex_run --port 8000 --threads 4

Routes:
  GET  /             the page (upload, paste or drop an image; KaTeX rendering).
  POST /api/predict  multipart field `image` or raw image bytes with an image/*
                     content type; optional `beam` (1-10) in the form or query.
  GET  /healthz      {"status": "ok", "model_id": ...}; 503 with no model, or
                     when one predict() call has run for more than the
                     request time limit (a stuck predictor).

Every error is JSON `{"error": "..."}` with a 4xx code that names the problem;
unexpected exceptions are logged here and answered with a 500 that has no
trace. Requests are decoded and preprocessed (`Predictor.prepare`: crop, size
and sanity checks) in waitress's threads and handed to one batching thread
that owns the predictor, so the predictor never runs concurrently, requests
that arrive together share one `predict` call, and a bad image costs only its
own request thread. A request waits at most the time limit (`--timeout`) for
its answer, then gets a 503 and its queued work is dropped.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import importlib
import logging
import math
import queue
import re
import socket
import sys
import threading
import time
from typing import Any, Callable

import flask
import numpy as np
from werkzeug import exceptions as wz_exceptions

from im2latex_jax.infer import predictor as predictor_lib
from im2latex_jax.infer.predictor import NoModelError
from im2latex_jax.infer import image_io

PredictorFactory = Callable[[], Any]

# Multipart field names an upload may come in ('file' is what pix2tex-style
# clients send).
UPLOAD_FIELDS = ("image", "file")
# Largest request body, in bytes; Flask answers 413 above it.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Beam sizes the page and API accept; 1 is greedy decoding.
MAX_BEAM = 10
# Longest side of each attention map sent to the browser, in cells. The maps
# arrive upsampled to the preprocessed image; a coarser grid keeps the JSON
# small and is still finer than the encoder's.
ATTENTION_MAX_SIDE = 128
# Most images one predict() call gets when requests arrive together.
MAX_BATCH = 8
# Longest a request waits for its prediction, in seconds (queue + predict).
REQUEST_TIMEOUT_S = 60.0

_log = logging.getLogger(__name__)


class ApiError(Exception):
  """A client error answered as JSON with `status`."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status


class _PredictorHolder:
  """Calls the factory once, lazily, and remembers a NoModelError."""

  def __init__(self, factory: PredictorFactory):
    self._factory = factory
    self._lock = threading.Lock()
    self._predictor = None
    self._error: str | None = None

  def get(self):
    """Returns the predictor, or raises ApiError(503) when there is none."""
    with self._lock:
      if self._predictor is None and self._error is None:
        try:
          self._predictor = self._factory()
        except (NoModelError, ValueError) as e:
          self._error = str(e) or type(e).__name__
          _log.warning("no model to serve: %s", self._error)
      if self._error is not None:
        raise ApiError(self._error, 503)
      return self._predictor


class _Batcher:
  """Serializes predict() calls on one thread, coalescing queued requests.

  A request waits for the call in progress; everything that queued meanwhile
  (up to max_batch, same beam size) goes into the next call. No request waits
  for others to arrive, so a lone request pays no latency for batching.
  """

  def __init__(self, holder: _PredictorHolder, max_batch: int = MAX_BATCH,
               timeout_s: float = REQUEST_TIMEOUT_S):
    self._holder = holder
    self._max_batch = max_batch
    self.timeout_s = timeout_s
    self._queue: queue.Queue = queue.Queue()
    self._start_lock = threading.Lock()
    self._thread: threading.Thread | None = None
    # perf_counter() when the predict() call in progress began; None when idle.
    self.busy_since: float | None = None

  def busy_seconds(self) -> float:
    since = self.busy_since
    return 0.0 if since is None else time.perf_counter() - since

  def predict(self, image, beam: int):
    """Predicts one image; re-raises the predictor's exception for it.

    Raises:
      ApiError(503): no answer within `timeout_s` (the request's work is
        dropped if it has not started).
    """
    with self._start_lock:
      if self._thread is None:
        self._thread = threading.Thread(
            target=self._loop, name="im2latex-predict", daemon=True)
        self._thread.start()
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._queue.put((image, beam, future))
    try:
      return future.result(timeout=self.timeout_s)
    except concurrent.futures.TimeoutError:
      future.cancel()
      raise ApiError(f"no prediction within the server's time limit ({self.timeout_s:g} s): "
                     "the model is busy or stuck; try again later", 503) from None

  def _loop(self):
    while True:
      items = [self._queue.get()]
      while len(items) < self._max_batch:
        try:
          items.append(self._queue.get_nowait())
        except queue.Empty:
          break
      for beam in sorted({beam for _, beam, _ in items}):
        self._run([it for it in items if it[1] == beam], beam)

  def _run(self, items, beam: int):
    # A request that timed out cancelled its future: its work is dropped.
    items = [it for it in items if it[2].set_running_or_notify_cancel()]
    if not items:
      return
    self.busy_since = time.perf_counter()
    try:
      # One result per image (a Prediction or the error that refused it), so
      # a bad image fails only the request that sent it.
      preds = self._holder.get().predict_each([im for im, _, _ in items],
                                              beam_size=beam)
    except Exception as e:  # pylint: disable=broad-except
      for _, _, future in items:
        future.set_exception(e)
      return
    finally:
      self.busy_since = None
    for (_, _, future), pred in zip(items, preds):
      if isinstance(pred, Exception):
        future.set_exception(pred)
      else:
        future.set_result(pred)


def create_app(predictor_factory: PredictorFactory,
               max_batch: int = MAX_BATCH,
               timeout_s: float = REQUEST_TIMEOUT_S) -> flask.Flask:
  """Builds the Flask app.

  Args:
    predictor_factory: returns a Predictor; called once, on the first request
      that needs it. NoModelError (or ValueError for a bad workdir) makes the
      page show the message and the API answer 503.
    max_batch: most images per predict() call.
    timeout_s: longest a request waits for its prediction (503 after).

  Returns:
    The WSGI app.
  """
  app = flask.Flask(__name__)
  app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
  app.json.sort_keys = False
  holder = _PredictorHolder(predictor_factory)
  batcher = _Batcher(holder, max_batch=max_batch, timeout_s=timeout_s)
  app.extensions["im2latex"] = holder
  app.extensions["im2latex_batcher"] = batcher

  @app.get("/")
  def index():
    try:
      model_id, error = holder.get().model_id, None
    except ApiError as e:
      model_id, error = None, str(e)
    return flask.render_template(
        "index.html", model_id=model_id, error=error, max_beam=MAX_BEAM,
        max_upload_mb=MAX_UPLOAD_BYTES // (1024 * 1024))

  @app.get("/healthz")
  def healthz():
    try:
      model_id = holder.get().model_id
    except ApiError as e:
      return {"status": "unavailable", "error": str(e)}, 503
    busy = batcher.busy_seconds()
    if busy > batcher.timeout_s:
      return {"status": "stuck", "model_id": model_id,
              "error": f"one prediction call has run for {busy:.0f} s, more than the "
                       f"request time limit ({batcher.timeout_s:g} s)"}, 503
    return {"status": "ok", "model_id": model_id}

  @app.post("/api/predict")
  def api_predict():
    t0 = time.perf_counter()
    predictor = holder.get()
    # The raw body is kept before the form is parsed (see _read_upload).
    flask.request.get_data(cache=True)
    beam = _parse_beam(flask.request)
    image = image_io.decode_image(_read_upload(flask.request))
    try:
      # Here, in this request's thread: a slow or bad image holds up no other.
      prepare = getattr(predictor, "prepare", None)  # optional for custom predictors
      prepared = prepare(image) if prepare is not None else image
      t1 = time.perf_counter()
      pred = batcher.predict(prepared, beam)
    except ValueError as e:  # preprocess.ImageError: blank, tiny, too large.
      raise ApiError(str(e), 422) from None
    t2 = time.perf_counter()
    body = prediction_json(pred)
    timings = {k: round(float(v), 4) for k, v in pred.timings.items()}
    timings["upload_decode_prepare"] = round(t1 - t0, 4)
    timings["request"] = round(time.perf_counter() - t0, 4)
    timings["queue_and_predict"] = round(t2 - t1, 4)
    body.update(beam=beam, timings=timings, model_id=predictor.model_id)
    return body

  @app.errorhandler(ApiError)
  @app.errorhandler(image_io.UploadError)
  def client_error(e):
    return {"error": str(e)}, e.status

  @app.errorhandler(wz_exceptions.HTTPException)
  def http_error(e):
    if e.code == 413:
      message = (f"upload too large: the limit is "
                 f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    else:
      message = f"{e.name}: {e.description}"
    return {"error": message}, e.code

  @app.errorhandler(Exception)
  def unexpected_error(e):
    _log.exception("unhandled error on %s %s", flask.request.method,
                   flask.request.path)
    return {"error": f"internal error ({type(e).__name__}); see server log"}, 500

  @app.after_request
  def security_headers(response):
    # Everything is served from here; KaTeX sets inline styles, nothing else
    # inline is allowed, and user text never reaches innerHTML.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data: blob:; "
        "style-src 'self' 'unsafe-inline'; font-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response

  return app


def _parse_beam(request: flask.Request) -> int:
  raw = request.args.get("beam")
  if raw is None and request.mimetype == "multipart/form-data":
    raw = request.form.get("beam")
  if raw is None or raw.strip() == "":
    return 1
  try:
    beam = int(raw)
  except ValueError:
    raise ApiError(f"beam must be an integer from 1 to {MAX_BEAM}, got "
                   f"{raw[:20]!r}", 400) from None
  if not 1 <= beam <= MAX_BEAM:
    raise ApiError(f"beam {beam} is out of range; use 1 (greedy) to "
                   f"{MAX_BEAM}", 400)
  return beam


def _read_upload(request: flask.Request) -> bytes:
  """Returns the uploaded image bytes from a multipart field or the raw body."""
  mimetype = request.mimetype
  if mimetype == "multipart/form-data":
    # Werkzeug silently drops a part whose filename is not UTF-8; the raw
    # body (cached by the caller before the form was parsed) still has it.
    raw = request.get_data(cache=True)
    for field in UPLOAD_FIELDS:
      upload = request.files.get(field)
      if upload is not None:
        return upload.read()
    recovered = _raw_multipart_part(raw, request.mimetype_params.get("boundary", ""))
    if recovered is not None:
      return recovered
    got = sorted(set(request.files) | set(request.form))
    raise ApiError("no file in the multipart fields 'image' or 'file' (got "
                   f"{', '.join(map(repr, got)) if got else 'no fields'})", 400)
  if mimetype.startswith("image/") or mimetype == "application/octet-stream":
    return request.get_data(cache=False)
  if not mimetype and not request.content_length:
    raise ApiError("no image: send multipart field 'image', or the image "
                   "bytes as the body with an image/* content type", 400)
  raise ApiError(f"unsupported content type {mimetype or 'none'!r}; send "
                 "multipart/form-data with field 'image', or image/*", 415)


def _raw_multipart_part(body: bytes, boundary: str) -> bytes | None:
  """The content of an 'image' or 'file' part found in a raw multipart body
  (for the parts the parser dropped), or None."""
  if not boundary:
    return None
  for part in body.split(b"--" + boundary.encode("latin-1")):
    head, sep, content = part.partition(b"\r\n\r\n")
    if not sep:
      continue
    for field in UPLOAD_FIELDS:
      if re.search(rb'content-disposition:[^\r\n]*\bname="%s"' % field.encode(),
                   head, re.IGNORECASE):
        return content[:-2] if content.endswith(b"\r\n") else content
  return None


def _data_url(png: bytes) -> str:
  return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def attention_json(attention: np.ndarray | None,
                   max_side: int = ATTENTION_MAX_SIDE) -> dict[str, Any]:
  """Per-token attention as small grayscale PNGs, each scaled to peak 255.

  Args:
    attention: [T, H, W] attention per token over the preprocessed image.
    max_side: longest side of each map sent, in cells.

  Returns:
    {"cell": pixels per cell side, "grid": [h, w], "maps": [T data URLs]};
    a cell covers `cell` x `cell` image pixels from the top left.
  """
  if attention is None or np.size(attention) == 0 or np.ndim(attention) != 3:
    return {"cell": 1, "grid": [0, 0], "maps": []}
  att = np.nan_to_num(np.asarray(attention, np.float32))  # [T, H, W]
  t, h, w = att.shape
  cell = max(1, math.ceil(max(h, w) / max_side))
  gh, gw = math.ceil(h / cell), math.ceil(w / cell)
  att = np.pad(att, ((0, 0), (0, gh * cell - h), (0, gw * cell - w)))
  att = att.reshape(t, gh, cell, gw, cell).mean(axis=(2, 4))  # [T, gh, gw]
  peak = att.max(axis=(1, 2), keepdims=True)
  att = np.clip(att / np.where(peak > 0, peak, 1.0), 0.0, 1.0)
  maps = np.round(att * 255).astype(np.uint8)
  return {"cell": cell, "grid": [gh, gw],
          "maps": [_data_url(image_io.encode_png(m)) for m in maps]}


def prediction_json(pred) -> dict[str, Any]:
  """The JSON fields of one Prediction that the page and API clients read."""
  return {
      "latex": pred.idiomatic,
      "tokens": list(pred.tokens),
      "token_probs": [round(float(p), 4) for p in pred.token_probs],
      "logprob": round(float(pred.logprob), 4),
      **predictor_lib.confidence_json(pred),
      "image": _data_url(image_io.encode_png(pred.image)),
      "attention": attention_json(pred.attention),
  }


def make_server(app: flask.Flask, host: str = "127.0.0.1", port: int = 8000,
                threads: int = 4):
  """A waitress server for `app`; port 0 picks a free one (`.effective_port`)."""
  import waitress  # pylint: disable=g-import-not-at-top
  return waitress.create_server(app, host=host, port=port, threads=threads,
                                ident="im2latex-jax")


def main(argv: list[str]) -> int:
  """`im2latex-jax serve`: loads the model, then serves with waitress.

  Args:
    argv: like sys.argv, the program name first (as im2latex_jax.main passes).

  Returns:
    0 after a clean shutdown; 2 for a bad option, an address that cannot be
    listened on (checked before the model is loaded) or a --workdir that
    cannot be loaded.
  """
  parser = argparse.ArgumentParser(
      prog=argv[0] if argv else "im2latex-jax serve",
      description="Serve the image-to-LaTeX page and JSON API.")
  parser.add_argument("--workdir", default=None,
                      help="training workdir with checkpoints and vocab.txt; "
                      "default: the shipped model, if any")
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, default=8000)
  parser.add_argument("--threads", type=int, default=4,
                      help="waitress worker threads")
  parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                      help="most requests coalesced into one predict() call")
  parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S,
                      help="seconds a request waits for its prediction before a 503")
  parser.add_argument("--fake", action="store_true",
                      help="serve a fixed-answer FakePredictor (UI work)")
  args = parser.parse_args(argv[1:])
  for name, value, low in (("--port", args.port, 0), ("--threads", args.threads, 1),
                           ("--max-batch", args.max_batch, 1), ("--timeout", args.timeout, 1)):
    if value < low or (name == "--port" and value > 65535):
      bound = "0..65535 (0: any free port)" if name == "--port" else f">= {low}"
      print(f"error: {name} {value} is out of range; use {bound}", file=sys.stderr)
      return 2
  # Before loading the model (seconds of work): is the address usable?
  try:
    with socket.create_server((args.host, args.port)):
      pass
  except OSError as e:
    print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}); "
          "choose another --port (or stop what uses it)", file=sys.stderr)
    return 2
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")

  if args.fake:
    from im2latex_jax.serve import fake  # pylint: disable=g-import-not-at-top
    factory = fake.FakePredictor
  else:
    def factory():
      # Looked up in sys.modules at call time (tests swap the module).
      predictor = importlib.import_module("im2latex_jax.infer.predictor")
      return predictor.load_predictor(args.workdir)

  app = create_app(factory, max_batch=args.max_batch, timeout_s=args.timeout)
  # Load (and compile) before taking traffic. A bad --workdir is a usage
  # error; no model at all still serves the page, which explains it.
  try:
    app.extensions["im2latex"].get()
  except ApiError as e:
    if args.workdir:
      print(f"error: cannot load a model from --workdir {args.workdir}: {e}")
      return 2
  try:
    server = make_server(app, args.host, args.port, args.threads)
  except OSError as e:
    print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}); "
          "choose another --port", file=sys.stderr)
    return 2
  # On stdout, whatever logging configuration the libraries set up.
  print(f"serving on http://{args.host}:{server.effective_port}/", flush=True)
  try:
    server.run()
  except KeyboardInterrupt:
    pass
  finally:
    server.close()
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
