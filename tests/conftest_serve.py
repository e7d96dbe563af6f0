"""Helpers shared by test_serve.py and test_browser.py (imported, not a conftest).

tests/conftest.py belongs to the whole suite; these helpers are serving-only,
so they live here and the two test modules import them.
"""

from __future__ import annotations

import contextlib
import io
import threading
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw


def formula_image(mode: str = "L", size: tuple[int, int] = (240, 80)) -> Image.Image:
  """A dark-on-white 'a/b' drawing in the given PIL mode."""
  img = Image.new("L", size, 255)
  draw = ImageDraw.Draw(img)
  w, h = size
  draw.text((w // 2 - 4, 8), "a", fill=0)
  draw.line((w // 4, h // 2, 3 * w // 4, h // 2), fill=0, width=3)
  draw.text((w // 2 - 4, h // 2 + 8), "b", fill=0)
  if mode == "L":
    return img
  if mode == "RGBA":
    # Black ink on a fully transparent background, as drawing tools export.
    ink = np.asarray(img) < 128
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 3] = np.where(ink, 255, 0)
    return Image.fromarray(rgba)
  if mode == "I;16":
    return Image.fromarray(np.asarray(img).astype("<u2") * 257)
  if mode == "F":
    return Image.fromarray(np.asarray(img).astype(np.float32))
  return img.convert(mode)


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt)
  return buf.getvalue()


def formula_png() -> bytes:
  return encode(formula_image())


@contextlib.contextmanager
def running_server(app, threads: int = 8) -> Iterator[str]:
  """Serves `app` with waitress on 127.0.0.1 (ephemeral port); yields its URL."""
  from waitress import wasyncore
  from im2latex_jax.serve import app as app_lib
  server = app_lib.make_server(app, "127.0.0.1", 0, threads=threads)
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.effective_port}"
  finally:
    # Let in-flight requests finish, then close every socket from inside the
    # loop's own thread (closing them from here races its select()); with
    # its map empty the loop returns.
    server.task_dispatcher.shutdown(timeout=5)
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(timeout=5)
    assert not thread.is_alive(), "waitress did not stop"
