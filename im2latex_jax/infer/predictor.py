"""Images in, LaTeX out: the model behind `predict`, `serve` and notebooks.

    predictor = load_predictor("/tmp/im2latex_run")   # or None: shipped model
    [pred] = predictor.predict([image], beam_size=5)
    pred.latex, pred.token_probs, pred.attention      # [T, H, W]

Each image goes through `preprocess.normalize_image` onto one of the model's own
buckets (the saved `config.input.buckets`), so the model sees dataset-like
inputs. Images are grouped by bucket and every group is padded to a batch size
from a small fixed set (BATCH_SIZES), so a server only ever compiles
|buckets| x |batch sizes| x |beam sizes| programs, each once, ahead of time.

Greedy decoding records per-token log-probabilities and attention as it goes.
Beam search returns only the best sequence, so the same compiled program then
runs one teacher-forced pass over it (one `lax.scan` of `decode_step`) to get
per-token probabilities and attention as well: the API looks the same for
every beam size.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from im2latex_jax import loading
from im2latex_jax.infer import decode
from im2latex_jax.infer import inference
from im2latex_jax.infer import preprocess
from im2latex_jax.data import buckets as buckets_lib
from im2latex_jax.data import vocab as vocab_lib
from im2latex_jax.latex import idiomatic as idiomatic_lib

# A workdir layout (config.json, vocab.txt, checkpoints/) shipped in the wheel.
SHIPPED_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "model")
# Environment variable naming a workdir to use when none is passed.
MODEL_ENV = "IM2LATEX_MODEL"
# The glyph-size search skips its later rounds for an image whose best
# first-round reading has at least this mean token log-probability (None:
# every round for every image). Chosen on the screenshot benchmark with
# benchmarks/search_policy.py (README "Screenshots").
CONFIDENT_SCORE: float | None = None
# A prediction whose last LOOP_SPAN tokens repeat with a period of at most
# decode.MAX_LOOP_PERIOD tokens is a runaway loop (`\\! \\! \\! ...`): greedy
# decoding stops there, and the repeats are cut to one (`trim_loop`). In
# im2latex-100k's 11,475 formulas here such a run is 4 in 11,475 (a periodic
# run of 24+ tokens; 99.9 % have at most 17).
LOOP_SPAN = 24
# Batch sizes a bucket group is padded to (see plan_batches).
BATCH_SIZES = (1, 8, 32)
# Batch sizes of the search's shared decoder (Predictor._read_together): a
# decoder step is latency-bound on CPU (55 tokens: 20 ms at batch 1, 24 ms at
# 4, 38 ms at 8 on 2 Xeon cores), so a round's readings pad to these freely.
DECODE_BATCH_SIZES = (1, 4, 8, 32)

# Feature-cell counts the shared decoder pads a round's encodings to
# (`decode_cells`): one decoder program per (batch, value), whatever canvases
# the candidates were encoded on; attention over the masked extra cells costs
# little beside the decoder's LSTM.
DECODE_CELL_STEP = 1.25


def decode_cells(cells: int, step: float = DECODE_CELL_STEP) -> int:
  """The smallest of 64 * step**k (k = 0, 1, ..., rounded up to a multiple of
  8) that is >= cells."""
  c = 64.0
  while int(np.ceil(c / 8) * 8) < cells:
    c *= step
  return int(np.ceil(c / 8) * 8)


NO_MODEL_MESSAGE = (
    "No model is shipped with this install yet; pass --workdir W of a training "
    "run (e.g. after `im2latex-jax train --config configs/quickstart.py "
    "--workdir W`)")


class NoModelError(RuntimeError):
  """No workdir given and no shipped model."""


@dataclasses.dataclass
class Prediction:
  """The model's reading of one image.

  Attributes:
    latex: the tokens joined by single spaces (the form metrics score).
    tokens: predicted tokens, without BOS/EOS.
    token_probs: probability of each token when it was chosen, in [0, 1].
    attention: float32 [T, H, W], token t's attention over the preprocessed
      image; each map sums to 1 over the image.
    logprob: log-probability of the whole sequence, EOS included.
    image: uint8 [H, W], the preprocessed image the model read.
    timings: seconds: preprocess (this image), encode_decode (the jitted call
      of its bucket group, shared by the group), postprocess (this image),
      total (from the predict() call to this prediction).
    scale: the rescale factor normalization applied to the input (its
      estimate of dataset glyph size / input glyph size).
    looped: the decoding ran into a repetition loop, which was cut
      (`trim_loop`): a low-confidence reading.
    readings: with the glyph-size search, every greedy reading it made of
      this image ({'round', 'scale', 'score', 'latex'}; score is the mean
      token log-probability that picked the winner), for analysis.
  """
  latex: str
  tokens: list[str]
  token_probs: list[float]
  attention: np.ndarray
  logprob: float
  image: np.ndarray
  timings: dict[str, float]
  scale: float | None = None
  looped: bool = False
  readings: list[dict] | None = None

  @property
  def idiomatic(self) -> str:
    """The LaTeX a person pastes (`\\tanh^{2}`, not `\\operatorname { t a n h } ^ { 2 }`)."""
    return idiomatic_lib.to_idiomatic(self.tokens)


def plan_batches(n: int, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> list[tuple[int, int]]:
  """Splits n images of one bucket into (images, padded batch size) calls.

  Pads to the smallest batch size that holds them, unless more than half of
  that batch would be padding: on CPU a call costs about in proportion to its
  padded batch (measured: 78 ms at 1, 418 ms at 8, 1.97 s at 32 on 2 cores),
  so 2 images run as two calls of 1 rather than one of 8, and 12 as 8 + 8
  rather than 32. Only the sizes in `batch_sizes` are ever compiled.
  """
  sizes = sorted(batch_sizes)
  plan = []
  while n > 0:
    fits = [b for b in sizes if b >= n]
    if fits and fits[0] - n <= n:
      plan.append((n, fits[0]))
      break
    take = max([b for b in sizes if b <= n] or [sizes[0]])
    take = min(take, n)
    plan.append((take, take if take in sizes else sizes[0]))
    n -= take
  return plan


def trim_loop(ids: list[int], span: int = LOOP_SPAN,
              max_period: int = decode.MAX_LOOP_PERIOD) -> tuple[list[int], bool]:
  """Cuts a periodic tail of at least `span` tokens down to one period.

  Returns:
    (the tokens kept, whether a loop was cut). span <= 0 cuts nothing.
  """
  if span <= 0:
    return ids, False
  for n in range(1, max_period + 1):
    run = 0  # tokens at the end equal to the token n before them
    for i in range(len(ids) - 1, n - 1, -1):
      if ids[i] != ids[i - n]:
        break
      run += 1
    if run + n >= span:
      return ids[:len(ids) - run], True
  return ids, False


def attention_to_image(attention: np.ndarray, feature_hw, image_hw) -> np.ndarray:
  """Spreads [T, N] attention over the feature grid onto the image pixels.

  Feature cell (i, j) covers image rows [i*H/fh, (i+1)*H/fh) and the same for
  columns (as `layers.feature_mask` counts them); its weight is shared evenly
  by its pixels (nearest upsampling, divided by the cell's pixel count), so
  each map still sums to 1 over the image.

  Returns:
    float32 [T, H, W].
  """
  fh, fw = (int(v) for v in feature_hw)
  h, w = (int(v) for v in image_hw)
  t = attention.shape[0]
  grid = np.asarray(attention, np.float32).reshape(t, fh, fw)
  rows = np.arange(h) * fh // h  # [H]: the cell row of each pixel row
  cols = np.arange(w) * fw // w  # [W]
  pixels = np.outer(np.bincount(rows, minlength=fh), np.bincount(cols, minlength=fw))
  density = grid / np.maximum(pixels, 1)  # [T, fh, fw]
  return density[:, rows][:, :, cols].astype(np.float32)


def make_teacher_forced_fn(model):
  """fn(variables, images, image_hw, tokens [B, L]) -> per-token values.

  Feeds BOS, tokens[:, :-1] and scores tokens: returns token_logprobs
  [B, L], attention [B, L, N] and feature_hw [B, 2]. Not jitted: it is
  composed into the beam program.
  """

  def fn(variables, images, image_hw, tokens):
    b = tokens.shape[0]
    enc = model.apply(variables, images, image_hw, method=model.encode)
    carry = model.apply(variables, enc, method=model.init_carry)
    inputs = jnp.concatenate(
        [jnp.full((b, 1), vocab_lib.BOS, jnp.int32), tokens[:, :-1]], axis=1)

    step = inference.step_fn(model, variables, enc)

    def body(carry, x):
      token_in, target = x  # [B], [B]
      logits, carry, attn = step(carry, token_in)
      logp = jax.nn.log_softmax(logits.astype(jnp.float32))  # [B, V]
      lp = jnp.take_along_axis(logp, target[:, None], axis=-1)[:, 0]
      return carry, (lp, attn)

    _, (lps, attn) = lax.scan(body, carry, (inputs.T, tokens.T))
    return {"token_logprobs": lps.T, "attention": jnp.swapaxes(attn, 0, 1),
            "feature_hw": enc["feature_hw"]}

  return fn


def make_predict_fn(model, *, beam_size: int, max_len: int,
                    length_penalty: float = 0.0, loop_span: int = LOOP_SPAN,
                    eos_bias: float = 0.0):
  """jit(fn)(variables, images, image_hw) -> tokens, logprobs, lengths,
  token_logprobs [B, L], attention [B, L, N], feature_hw [B, 2]; `eos_bias`
  is greedy's (decode.greedy_search)."""
  if beam_size == 1:
    return inference.make_decode_fn(model, beam_size=1, max_len=max_len,
                                    collect_attention=True, loop_span=loop_span,
                                    eos_bias=eos_bias)
  search = inference.make_decode_fn(model, beam_size=beam_size, max_len=max_len,
                                    length_penalty=length_penalty)
  forced = make_teacher_forced_fn(model)

  def fn(variables, images, image_hw):
    best = search(variables, images, image_hw)
    # One program, so the tokens never leave the device between the search
    # and the rescoring pass.
    out = forced(variables, images, image_hw, best["tokens"])
    out.update(tokens=best["tokens"], logprobs=best["logprobs"],
               lengths=best["lengths"])
    return out

  return jax.jit(fn)


class Predictor:
  """A loaded model that turns images into Predictions; thread-safe.

  Attributes:
    model_id: '<workdir name>@<step>'.
    buckets: the (H, W) image buckets the model was trained with.
    max_len: most tokens decoded per image (config.evals.max_decode_len).
  """

  def __init__(self, loaded: inference.LoadedModel,
               batch_sizes: tuple[int, ...] = BATCH_SIZES,
               scale_rounds: tuple[tuple[float, ...], ...] | None = None,
               loop_span: int = LOOP_SPAN,
               confident_score: float | None = CONFIDENT_SCORE,
               shared_decoding: bool = True,
               canvases: str = "fine"):
    self._loaded = loaded
    self.model_id = loaded.model_id
    self.vocab = loaded.vocab
    self.config = loaded.config
    self.buckets = buckets_lib.parse_buckets(loaded.config.input.buckets)
    # What the glyph-size search encodes its candidates on: "buckets", the
    # training buckets (as the model was trained), or "fine", the smallest
    # of preprocess.canvas_ladder(buckets) (less white padding to encode).
    if canvases not in ("buckets", "fine"):
      raise ValueError(f"canvases={canvases!r}: choose 'buckets' or 'fine'")
    self.canvases = (self.buckets if canvases == "buckets"
                     else preprocess.canvas_ladder(self.buckets))
    self.max_len = int(loaded.config.evals.max_decode_len)
    self.length_penalty = float(loaded.config.evals.get("length_penalty", 0.0))
    self.eos_bias = float(loaded.config.evals.get("eos_bias", 0.0))
    self.batch_sizes = tuple(sorted(set(int(b) for b in batch_sizes)))
    # The glyph-size search (see predict_each and preprocess.SCALE_ROUNDS);
    # () reads each image once, at preprocess.estimate_scale.
    self.scale_rounds = (preprocess.SCALE_ROUNDS if scale_rounds is None
                         else tuple(tuple(r) for r in scale_rounds))
    # Greedy decoding stops a loop this long (0: never; benchmarks that need
    # a fixed decoded length).
    self.loop_span = int(loop_span)
    # The search stops after a round for an image whose best reading has at
    # least this mean token log-probability (None: always every round).
    self.confident_score = None if confident_score is None else float(confident_score)
    if not self.batch_sizes or self.batch_sizes[0] < 1:
      raise ValueError(f"batch_sizes {batch_sizes} must be positive integers")
    # One lock for the caches and the device: jitted calls of one model run
    # one at a time (two would only split the same two cores).
    self._lock = threading.Lock()
    self._fns: dict[int, Any] = {}  # beam -> jitted predict fn
    self._compiled: dict[tuple[int, tuple[int, int], int], Any] = {}
    # The search's readings: encoder per (bucket, batch), then one greedy
    # decoder per (batch, feature cells) for a round's encodings together.
    self._encode_fn = inference.make_encode_fn(loaded.model)
    self._greedy_fn = inference.make_greedy_fn(
        loaded.model, max_len=self.max_len, collect_attention=True, loop_span=self.loop_span,
        eos_bias=self.eos_bias)
    self._encoders: dict[tuple[tuple[int, int], int], Any] = {}
    self._decoders: dict[tuple[int, int], Any] = {}
    # False: the search reads each canvas group encode-and-decode, as before
    # 2026-12-02 (benchmarks/latency.py compares); None: known at the first
    # encoding (inference.can_pad_encodings).
    self._shared_decoding: bool | None = None if shared_decoding else False

  @property
  def compiled_keys(self) -> list[tuple[int, tuple[int, int], int]]:
    """(beam, bucket, batch) of every encode-and-decode program compiled so
    far (the glyph-size search's are in `search_compiled_keys`)."""
    with self._lock:
      return list(self._compiled)

  @property
  def search_compiled_keys(self) -> tuple[list, list]:
    """The search's programs: ([(bucket, batch) encoders], [(batch, feature
    cells) decoders])."""
    with self._lock:
      return list(self._encoders), list(self._decoders)

  def _executable(self, beam: int, bucket: tuple[int, int], batch: int):
    """The compiled program for these shapes; compiles it once. Holds _lock."""
    fn = self._fns.get(beam)
    if fn is None:
      fn = self._fns[beam] = make_predict_fn(
          self._loaded.model, beam_size=beam, max_len=self.max_len,
          length_penalty=self.length_penalty, loop_span=self.loop_span,
          eos_bias=self.eos_bias)
    h, w = bucket
    return self._compile_once(self._compiled, (beam, bucket, batch), fn,
                              jax.ShapeDtypeStruct((batch, h, w, 1), jnp.uint8),
                              jax.ShapeDtypeStruct((batch, 2), jnp.int32))

  def _compile_once(self, cache: dict, key, fn, *args):
    """cache[key], else `fn(variables, *args)` lowered for the shapes of args
    (arrays or ShapeDtypeStructs), compiled and kept there. Holds _lock."""
    exe = cache.get(key)
    if exe is None:
      shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), args)
      exe = cache[key] = fn.lower(self._loaded.variables, *shapes).compile()
    return exe

  def _timed(self, exe, *args) -> tuple[dict[str, np.ndarray], float]:
    """(numpy outputs of exe(variables, *args), seconds). Holds _lock."""
    t = time.perf_counter()
    out = jax.device_get(exe(self._loaded.variables, *args))
    return out, time.perf_counter() - t

  @staticmethod
  def _stacked(images: list[np.ndarray], bucket: tuple[int, int], batch: int):
    """(images [batch, H, W, 1] uint8, image_hw [batch, 2]) of one bucket,
    padded with copies of the last image rather than blank ones: the search
    stops when every sequence has ended, and a copy ends exactly when its
    original does, while a blank image might run to max_len."""
    x = np.stack(images + [images[-1]] * (batch - len(images)))[..., None]
    return x, np.tile(np.array([bucket], np.int32), (batch, 1))

  def warmup(self, buckets=None, batch_sizes=(1,), beam_sizes=(1,)) -> None:
    """Compiles ahead of the first request (default: every bucket, batch 1)."""
    with self._lock:
      for beam in beam_sizes:
        for bucket in buckets or self.buckets:
          for batch in batch_sizes:
            self._executable(int(beam), tuple(bucket), int(batch))

  def preprocess(self, image) -> np.ndarray:
    """uint8 [H, W] on one of the model's buckets; raises preprocess.ImageError."""
    return preprocess.normalize_image(image, buckets=self.buckets)

  def prepare(self, image) -> preprocess.Crop:
    """The per-image work that needs no model (grayscale, frame trim,
    inversion, crop; large inputs reduced first): run it where it does not
    hold up other images (the server's request threads), then pass the Crop
    to `predict_each` in place of the image.

    Raises:
      preprocess.ImageError: the image is blank, tiny or not a formula.
    """
    return preprocess.crop_formula(image)

  def predict_each(self, images: list, beam_size: int = 1,
                   scales: list[float | None] | None = None
                   ) -> list[Prediction | preprocess.ImageError]:
    """Like `predict`, but an image that cannot be read gets its ImageError
    in its place instead of failing the others.

    Glyph size: each image is cropped once and read greedily at the
    candidate scales of `preprocess.scale_candidates`, then at
    `self.scale_rounds`' finer offsets around the best so far (all images of
    a round in shared batches); the reading the model is most sure of
    (highest mean token log-probability) is kept; with beam_size > 1 the
    winning scale is decoded again with the beam. (Scoring only the first 24
    tokens of each candidate was tried: it cost 2-5 BLEU on the screenshot
    benchmark and saved ~6 % of the time, the encoder being most of it.)
    A round's readings are encoded canvas by canvas and decoded in one batch
    (`_read_together`): the same readings, ~10-15 % less time on 2 cores.
    With `scale_rounds=()` an image is read once, at
    `preprocess.estimate_scale`.

    Args:
      images: arrays or PIL images (see `preprocess.to_grayscale`), or the
        Crops `prepare` made of them.
      scales: per image, a known rescale factor to use instead (None entries:
        search), as `preprocess.normalize` takes.

    Raises:
      ValueError: beam_size < 1.
    """
    if int(beam_size) < 1:
      raise ValueError(f"beam_size {beam_size} must be at least 1 (1 is greedy)")
    out: list[Prediction | preprocess.ImageError | None] = [None] * len(images)
    crops: dict[int, preprocess.Crop] = {}
    crop_seconds: dict[int, float] = {}
    known: dict[int, float] = {}
    for i, image in enumerate(images):
      t = time.perf_counter()
      try:
        crops[i] = (image if isinstance(image, preprocess.Crop)
                    else preprocess.crop_formula(image))
      except preprocess.ImageError as e:
        out[i] = e
        continue
      if scales is not None and scales[i] is not None:
        known[i] = float(scales[i]) * crops[i].reduction
      elif not self.scale_rounds:
        known[i] = preprocess.estimate_scale(crops[i])
      crop_seconds[i] = time.perf_counter() - t

    def placed(i, scs):
      jobs, error = [], None
      for sc in scs:
        t = time.perf_counter()
        try:
          g = preprocess.place(crops[i].ink, sc, self.canvases)
        except preprocess.ImageError as e:
          error = e
          continue
        jobs.append((i, (g, sc, time.perf_counter() - t + crop_seconds[i])))
      return jobs, error

    # Search: greedy readings at the candidate scales, round by round.
    best: dict[int, tuple[float, Prediction, tuple, dict]] = {}
    errors: dict[int, preprocess.ImageError] = {}
    tried: dict[int, list[float]] = {}
    readings: dict[int, list[dict]] = {}
    pending = {i: preprocess.scale_candidates(crops[i], self.scale_rounds[0])
               for i in crops if i not in known} if self.scale_rounds else {}
    for rnd in range(len(self.scale_rounds)):
      jobs = []
      for i, scs in pending.items():
        tried.setdefault(i, []).extend(scs)
        js, err = placed(i, scs)
        jobs.extend(js)
        if err is not None:
          errors[i] = err
      preds = self._read_together([j for _, j in jobs])
      for (i, job), (p, raw) in zip(jobs, preds):
        score = p.logprob / (len(p.tokens) + 1)
        readings.setdefault(i, []).append(
            {"round": rnd, "scale": job[1], "score": score, "latex": p.latex})
        if i not in best or score > best[i][0]:
          best[i] = (score, p, job, raw)
      if rnd + 1 < len(self.scale_rounds):
        pending = {i: preprocess.dedup_scales(
            [best[i][2][1] * float(np.exp(o)) for o in self.scale_rounds[rnd + 1]],
            tried[i]) for i in best
            if self.confident_score is None or best[i][0] < self.confident_score}
    # Final readings: the known scales, and with a beam each search's winner.
    final: list[tuple[int, tuple]] = []
    for i in known:
      js, err = placed(i, [known[i]])
      final.extend(js)
      if err is not None:
        errors[i] = err
    for i, (_, p, job, raw) in best.items():
      if beam_size == 1:
        p.attention = self._attention(raw, self._kept(raw)[0], p.image)  # the winner's only
        out[i] = p
      else:
        final.append((i, job))
    for (i, _), p in zip(final, self.predict_normalized([j for _, j in final], beam_size)):
      out[i] = p
    for i in crops:
      if out[i] is None:
        out[i] = errors[i]
      else:
        if i in readings:
          out[i].readings = readings[i]
        if crops[i].reduction != 1 and out[i].scale is not None:
          out[i].scale /= crops[i].reduction  # of the image passed in
          for r in out[i].readings or ():
            r["scale"] /= crops[i].reduction
    return out

  def predict(self, images: list[np.ndarray], beam_size: int = 1) -> list[Prediction]:
    """Predicts LaTeX for each image, in order.

    Args:
      images: arrays or PIL images, any size, colours and background (see
        `preprocess.to_grayscale`).
      beam_size: 1 for greedy decoding.

    Returns:
      One Prediction per image.

    Raises:
      preprocess.ImageError: an image cannot be read as a formula (blank,
        tiny, too large); no prediction is made for any image.
      ValueError: beam_size < 1.
    """
    preds = self.predict_each(images, beam_size)
    for p in preds:
      if isinstance(p, Exception):
        raise p
    return preds

  def predict_normalized(self, normalized: list[tuple[np.ndarray, float, float]],
                         beam_size: int = 1) -> list[Prediction]:
    """Predicts from (normalized image, its scale, preprocess seconds) triples."""
    return [p for p, _ in self._predict_normalized(normalized, beam_size)]

  def _predict_normalized(self, normalized: list[tuple[np.ndarray, float, float]],
                          beam_size: int = 1, attention: bool = True
                          ) -> list[tuple[Prediction, dict[str, np.ndarray]]]:
    """predict_normalized, with each prediction's raw model outputs."""
    beam_size = int(beam_size)
    if beam_size < 1:
      raise ValueError(f"beam_size {beam_size} must be at least 1 (1 is greedy)")
    t_start = time.perf_counter()
    pre = [g for g, _, _ in normalized]
    pre_times = [t for _, _, t in normalized]

    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(pre):
      groups.setdefault(im.shape, []).append(i)
    results: list[tuple[Prediction, dict[str, np.ndarray]] | None] = [None] * len(pre)
    for bucket, idxs in groups.items():
      start = 0
      for count, batch in plan_batches(len(idxs), self.batch_sizes):
        part, start = idxs[start:start + count], start + count
        outs, t_model = self._run(bucket, [pre[i] for i in part], beam_size, batch)
        for i, out in zip(part, outs):
          t = time.perf_counter()
          p = self._prediction(out, pre[i], attention)
          p.scale = normalized[i][1]
          p.timings = {
              "preprocess": pre_times[i], "encode_decode": t_model,
              "postprocess": time.perf_counter() - t,
              "total": time.perf_counter() - t_start}
          results[i] = (p, out)
    return results

  def _run(self, bucket: tuple[int, int], images: list[np.ndarray], beam: int,
           batch: int) -> tuple[list[dict[str, np.ndarray]], float]:
    """Runs images padded to `batch`; returns per-image numpy outputs and seconds."""
    n = len(images)
    x, hw = self._stacked(images, bucket, batch)
    with self._lock:
      out, seconds = self._timed(self._executable(beam, tuple(bucket), batch), x, hw)
    keys = [k for k in ("tokens", "logprobs", "token_logprobs", "attention",
                        "feature_hw", "looped") if k in out]
    return [{k: np.asarray(out[k][i]) for k in keys} for i in range(n)], seconds

  def _read_together(self, normalized: list[tuple[np.ndarray, float, float]]
                     ) -> list[tuple[Prediction, dict[str, np.ndarray]]]:
    """Greedy readings of the glyph-size search, as `_predict_normalized(...,
    1, attention=False)` gives them, but cheaper: each image is encoded on its
    own canvas, and then all are decoded together, their encodings padded to
    the largest's feature cells (masked: each decodes as it would alone; a
    round's 2-4 readings of an image cost one decoder's time instead of 2-4).
    Models whose encoding `inference.pad_encodings` does not know read
    one bucket at a time."""
    if self._shared_decoding is False or not normalized:
      return self._predict_normalized(normalized, 1, attention=False)
    t_start = time.perf_counter()
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (g, _, _) in enumerate(normalized):
      groups.setdefault(g.shape, []).append(i)
    encs: list[dict[str, np.ndarray]] = [{}] * len(normalized)
    seconds = [0.0] * len(normalized)
    for bucket, idxs in groups.items():
      start = 0
      for count, batch in plan_batches(len(idxs), self.batch_sizes):
        part, start = idxs[start:start + count], start + count
        x, hw = self._stacked([normalized[i][0] for i in part], bucket, batch)
        with self._lock:
          exe = self._compile_once(self._encoders, (bucket, batch), self._encode_fn, x, hw)
          out, took = self._timed(exe, x, hw)
        if self._shared_decoding is None:
          self._shared_decoding = inference.can_pad_encodings(out)
          if not self._shared_decoding:
            return self._predict_normalized(normalized, 1, attention=False)
        for k, i in enumerate(part):
          encs[i] = {key: np.asarray(v[k:k + 1]) for key, v in out.items()}
          seconds[i] = took
    results: list = [None] * len(normalized)
    order = sorted(range(len(normalized)), key=lambda i: encs[i]["mask"].shape[1])
    largest = DECODE_BATCH_SIZES[-1]
    for start in range(0, len(order), largest):
      chunk = order[start:start + largest]
      batch = min(b for b in DECODE_BATCH_SIZES if b >= len(chunk))
      cells = decode_cells(encs[chunk[-1]]["mask"].shape[1])
      enc = inference.pad_encodings(
          [encs[i] for i in chunk] + [encs[chunk[-1]]] * (batch - len(chunk)), cells)
      with self._lock:
        exe = self._compile_once(self._decoders, (batch, cells), self._greedy_fn, enc)
        out, took = self._timed(exe, enc)
      for k, i in enumerate(chunk):
        raw = {key: np.asarray(out[key][k]) for key in
               ("tokens", "logprobs", "token_logprobs", "attention", "feature_hw", "looped")
               if key in out}
        raw["attention"] = raw["attention"][:, :encs[i]["mask"].shape[1]]
        t = time.perf_counter()
        p = self._prediction(raw, normalized[i][0], attention=False)
        p.scale = normalized[i][1]
        p.timings = {"preprocess": normalized[i][2], "encode_decode": seconds[i] + took,
                     "postprocess": time.perf_counter() - t,
                     "total": time.perf_counter() - t_start}
        results[i] = (p, raw)
    return results

  def _kept(self, out: dict[str, np.ndarray]) -> tuple[list[int], list[int], bool]:
    """(decoding steps kept, their ids, looped): the sequence cut at EOS, PAD/BOS
    emitted by an undertrained model dropped, a repetition loop of
    self.loop_span tokens cut (none with loop_span 0)."""
    keep, ids = [], []
    for t, i in enumerate(out["tokens"].tolist()):
      if i == vocab_lib.EOS:
        break
      if i in (vocab_lib.PAD, vocab_lib.BOS):
        continue
      keep.append(t)
      ids.append(i)
    ids, looped = trim_loop(ids, self.loop_span)
    return keep[:len(ids)], ids, looped

  @staticmethod
  def _attention(out: dict[str, np.ndarray], keep: list[int], image: np.ndarray) -> np.ndarray:
    """The kept steps' attention maps over the preprocessed image."""
    return attention_to_image(out["attention"][keep].astype(np.float32),
                              out["feature_hw"], image.shape)

  def _prediction(self, out: dict[str, np.ndarray], image: np.ndarray,
                  attention: bool = True) -> Prediction:
    """Turns one decoded sequence into a Prediction (token, probability and
    attention lists aligned). attention=False leaves `attention` None (the
    search's losing readings never need theirs)."""
    keep, ids, looped = self._kept(out)
    tokens = self.vocab.decode_tokens(ids)  # no specials left: one token an id
    probs = np.exp(out["token_logprobs"].astype(np.float64)[keep])
    att = self._attention(out, keep, image) if attention else None
    return Prediction(latex=" ".join(tokens), tokens=tokens,
                      token_probs=[float(p) for p in probs], attention=att,
                      logprob=float(out["logprobs"]), image=image, timings={},
                      looped=looped or bool(out.get("looped", False)))


def confidence_json(pred) -> dict[str, Any]:
  """`low_confidence` and its reasons (`warnings`), plus `scale`, for the
  JSON of predict and the web API."""
  warnings = []
  if getattr(pred, "looped", False):
    warnings.append("the reading ran into a repetition loop, which was cut")
  scale = getattr(pred, "scale", None)
  return {"low_confidence": bool(warnings), "warnings": warnings,
          "scale": None if scale is None else round(float(scale), 4)}


def default_model_dir() -> str | None:
  """$IM2LATEX_MODEL, else the shipped model directory if it holds one."""
  env = os.environ.get(MODEL_ENV)
  if env:
    return env
  if os.path.exists(os.path.join(SHIPPED_MODEL_DIR, "config.json")):
    return SHIPPED_MODEL_DIR
  return None


def load_predictor(workdir: str | None = None, *,
                   batch_sizes: tuple[int, ...] = BATCH_SIZES,
                   scale_rounds: tuple[tuple[float, ...], ...] | None = None
                   ) -> Predictor:
  """Loads the best checkpoint of `workdir` (None: the shipped model).

  Raises:
    NoModelError: workdir is None and there is no shipped model or
      $IM2LATEX_MODEL.
    ValueError: the workdir holds no usable model; the message says why.
  """
  source = "--workdir"
  if workdir is None:
    workdir = default_model_dir()
    if workdir is None:
      raise NoModelError(NO_MODEL_MESSAGE)
    source = f"${MODEL_ENV}" if os.environ.get(MODEL_ENV) else "the shipped model"
  try:
    loaded = loading.load_model(workdir)
  except inference.WorkdirError:
    raise
  except (OSError, json.JSONDecodeError, KeyError) as e:
    raise ValueError(f"cannot load a model from {workdir} ({source}): "
                     f"{type(e).__name__}: {e}") from None
  return Predictor(loaded, batch_sizes=batch_sizes, scale_rounds=scale_rounds)
