"""Safe decoding of untrusted image bytes into the arrays a Predictor takes.

Shared by the web server and the predict CLI. Every failure is an
`UploadError` that carries the HTTP status it maps to, so the server can answer
a clear 4xx and the CLI can print one line per bad file.

Policy for image modes (decided here, tested in tests/test_serve.py):
  * L, RGB, 1 (bilevel), P (palette): accepted as is (converted to L / RGB).
  * Alpha (LA, RGBA, PA, P with transparency): composited on white, because
    formulas are drawn dark on a transparent background by most tools and the
    model was trained on dark-on-white.
  * 16-bit grayscale (I;16*, and I with values in (255, 65535]): scaled to 8
    bits by dividing by 257 (65535 -> 255); I with values <= 255 kept as is.
  * CMYK, YCbCr, LAB, HSV: converted to RGB by Pillow.
  * Anything else (32-bit float 'F', 32-bit integers beyond 16 bits, ...):
    rejected with 415 and the mode named.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFile


# Largest decoded image we accept, in pixels. A formula image is rarely above
# 2,000 x 600; 25 MP leaves room for photos and still bounds memory at ~75 MB
# of RGB. Checked from the header, before any pixel is decoded, so a
# decompression bomb (a tiny PNG that inflates to gigapixels) costs nothing.
MAX_PIXELS = 25_000_000

# Decoded file types we accept; others (PDF, EPS, ICO, ...) are refused before
# Pillow's decoders run.
ALLOWED_FORMATS = frozenset(
    {"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "MPO"})

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"),
          (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
_ALPHA_MODES = ("LA", "RGBA", "PA", "La", "RGBa")
_TO_RGB_MODES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")


# Larger inputs are box-averaged by an integer factor to at most this many
# pixels before anything else runs, which bounds the work per image (a 25 MP
# upload costs what a 4 MP one does). A formula that large is far above the
# dataset's glyph size, so it loses nothing it needs: 4 MP is a 4K screen.
MAX_WORK_PIXELS = 4_000_000


class UploadError(ValueError):
  """An upload that cannot be turned into an image; `status` is its HTTP code."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def decode_image(data: bytes) -> np.ndarray:
  """Decodes image bytes into uint8 [H, W] (grayscale) or [H, W, 3] (color).

  Args:
    data: the raw bytes of an image file (PNG, JPEG, GIF, BMP, TIFF, WebP).

  Returns:
    A uint8 array, [H, W] for grayscale sources and [H, W, 3] for color ones;
    a color JPEG over MAX_WORK_PIXELS comes as [H, W], its luma.

  Raises:
    UploadError: with status 422 for an empty or zero-size image, 415 for
      bytes that are not an image or an unsupported mode, 413 for an image
      over MAX_PIXELS, and 400 for a truncated or corrupt file.
  """
  if not data:
    raise UploadError("the image is empty (0 bytes)", 422)
  # A module-level switch in Pillow; truncated files must fail, not decode
  # half an image filled with grey.
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    img = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError as e:
    raise UploadError(f"image too large: {e}", 413) from None
  except Image.UnidentifiedImageError:
    kind = _sniff(data)
    if kind:  # The right magic bytes but Pillow cannot parse the header.
      raise UploadError(f"corrupt {kind} file: cannot read its header", 400)
    raise UploadError(
        "not a recognized image; upload a PNG, JPEG, GIF, BMP, TIFF or WebP "
        "file", 415) from None
  except (OSError, SyntaxError, ValueError) as e:
    raise UploadError(f"corrupt image header: {e}", 400) from None

  with img:
    if img.format not in ALLOWED_FORMATS:
      raise UploadError(
          f"unsupported image format {img.format}; upload a PNG, JPEG, GIF, "
          "BMP, TIFF or WebP file", 415)
    w, h = img.size
    if w == 0 or h == 0:
      raise UploadError(f"the image has zero size ({w}x{h})", 422)
    if w * h > MAX_PIXELS:
      raise UploadError(
          f"image too large: {w}x{h} = {w * h:,} pixels, the limit is "
          f"{MAX_PIXELS:,}; downscale it first", 413)
    if (img.format in ("JPEG", "MPO") and img.mode in ("RGB", "YCbCr")
        and w * h > MAX_WORK_PIXELS):
      # A photo-sized JPEG is read as its luma channel (what the model sees
      # anyway, the same 601 weights): half the decoding time of RGB, and
      # preprocessing of a 25 MP upload stays well under a second.
      img.draft("L", (w, h))
    try:
      img.load()
    except Image.DecompressionBombError as e:
      raise UploadError(f"image too large: {e}", 413) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
      raise UploadError(f"truncated or corrupt image: {e}", 400) from None
    return to_array(img)


def _sniff(data: bytes) -> str | None:
  """The format named by the file's magic bytes, if it is one we accept."""
  for magic, kind in _MAGIC:
    if data.startswith(magic):
      return kind
  if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
    return "WebP"
  return None


def to_array(img: Image.Image) -> np.ndarray:
  """The one mode policy (module docstring): a loaded image of any supported
  mode as uint8 L or RGB; UploadError (415) for the others. preprocess takes
  PIL images through this too."""
  mode = img.mode
  if mode == "P":
    mode = "PA" if "transparency" in img.info else "RGB"
    img = img.convert("RGBA" if mode == "PA" else "RGB")
    mode = img.mode
  if mode in _ALPHA_MODES:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
  if mode in ("L", "RGB"):
    return np.asarray(img)
  if mode == "1":
    return np.asarray(img.convert("L"))
  if mode in _TO_RGB_MODES:
    return np.asarray(img.convert("RGB"))
  if mode.startswith("I;16") or mode == "I":
    arr = np.asarray(img).astype(np.int64)
    if arr.min() < 0 or arr.max() > 65535:
      raise UploadError(
          f"unsupported image mode {mode} with values in "
          f"[{arr.min()}, {arr.max()}]; save it as 8- or 16-bit grayscale", 415)
    # I;16 is 16-bit by definition; a 32-bit 'I' image is taken as 16-bit
    # only when some value says so .
    if mode == "I" and arr.max(initial=0) <= 255:
      return arr.astype(np.uint8)
    return (arr // 257).astype(np.uint8)
  raise UploadError(
      f"unsupported image mode {mode}; save it as 8-bit grayscale or RGB "
      "(PNG or JPEG)", 415)


def encode_png(array: np.ndarray) -> bytes:
  """Encodes a uint8 [H, W] or [H, W, 3] array as PNG bytes."""
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
      buf, format="PNG", optimize=False, compress_level=6)
  return buf.getvalue()
