"""A deterministic stand-in for `im2latex_jax.infer.predictor.Predictor`.

Used by the serving and CLI tests, and by `im2latex-jax serve --fake` to look at
the page without a trained model. It follows the Predictor contract through
the real preprocessing: `prepare` is `preprocess.crop_formula` (so blank,
tiny and not-a-formula images are refused as the real Predictor refuses
them), and every readable image gets a fixed formula with attention that
sweeps left to right.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from im2latex_jax.infer import preprocess
from im2latex_jax.infer.predictor import Prediction
from im2latex_jax.infer.preprocess import ImageError


FAKE_TOKENS = ("\\frac", "{", "a", "}", "{", "b", "}")
# Two tokens below 0.7 so the page has low-confidence chips to show.
FAKE_PROBS = (0.98, 0.99, 0.55, 0.99, 0.97, 0.64, 0.99)


class FakePredictor:
  """Returns `\\frac { a } { b }` for every non-blank image.

  Attributes:
    model_id: a fixed id shown by /healthz and the page.
    calls: the batch size of every predict() call, in order (for tests of
      request coalescing).
  """

  model_id = "fake-frac-v1"

  def __init__(self, delay_s: float = 0.0):
    self.delay_s = delay_s
    self.calls: list[int] = []
    self._lock = threading.Lock()

  def predict(self, images: list[np.ndarray],
              beam_size: int = 1) -> list[Prediction]:
    """Predicts the fixed formula for each image; raises ImageError if blank."""
    if beam_size < 1:
      raise ValueError(f"beam_size {beam_size} must be >= 1")
    with self._lock:
      self.calls.append(len(images))
    t0 = time.perf_counter()
    grays = [_preprocess(im) for im in images]
    t1 = time.perf_counter()
    if self.delay_s:
      time.sleep(self.delay_s)
    preds = []
    for gray in grays:
      t2 = time.perf_counter()
      preds.append(Prediction(
          latex=" ".join(FAKE_TOKENS),
          tokens=list(FAKE_TOKENS),
          token_probs=list(FAKE_PROBS),
          attention=_sweep_attention(gray.shape, len(FAKE_TOKENS)),
          logprob=float(sum(math.log(p) for p in FAKE_PROBS)),
          image=gray,
          timings={"preprocess": t1 - t0, "encode": 0.0,
                   "decode": time.perf_counter() - t2,
                   "total": time.perf_counter() - t0}))
    return preds


  def prepare(self, image) -> preprocess.Crop:
    """The request-thread step, as Predictor.prepare: the real crop."""
    return preprocess.crop_formula(image)

  def predict_each(self, images: list[np.ndarray], beam_size: int = 1,
                   scales=None) -> list[Prediction | ImageError]:
    """Per image: its Prediction, or the ImageError that refused it (one
    predict() call when every image is readable)."""
    del scales  # The fake reads every image at its own size.
    try:
      return self.predict(images, beam_size)
    except ImageError:
      out = []
      for im in images:
        try:
          out.extend(self.predict([im], beam_size))
        except ImageError as e:
          out.append(e)
      return out


def _preprocess(image) -> np.ndarray:
  """The real crop (an image, or a Crop that `prepare` made), padded as the
  model's input is: uint8, ink dark on 255."""
  crop = image if isinstance(image, preprocess.Crop) else preprocess.crop_formula(image)
  return np.pad(np.round(crop.ink).astype(np.uint8), 8, constant_values=255)


def _sweep_attention(hw: tuple[int, int], num_tokens: int) -> np.ndarray:
  """Gaussian blobs moving left to right, one per token: [T, H, W] float32."""
  h, w = hw
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  maps = []
  for t in range(num_tokens):
    cx = (t + 0.5) / num_tokens * w
    cy = h / 2 + (h / 4) * (-1 if t % 2 else 1) * 0.5
    m = np.exp(-(((xs - cx) / (w / 8 + 1)) ** 2 + ((ys - cy) / (h / 4 + 1)) ** 2))
    maps.append(m / m.sum())
  return np.stack(maps).astype(np.float32)
