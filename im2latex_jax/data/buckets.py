"""im2markup's image buckets.

im2markup pads every cropped formula onto the smallest of a fixed list of
canvas sizes and then downsamples ×2, so the processed im2latex-100k images
come in exactly these (height, width) shapes. Batching by bucket gives one
image shape per batch and a small, fixed set of compiled shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

# (W, H) as im2markup's preprocess_images.py lists them, before downsampling.
_IM2MARKUP_BUCKETS_WH_FULL = (
    (240, 100), (320, 80), (400, 80), (400, 100), (480, 80), (480, 100),
    (560, 80), (560, 100), (640, 80), (640, 100), (720, 80), (720, 100),
    (720, 120), (720, 200), (800, 100), (800, 320), (1000, 200), (1000, 400),
    (1200, 200), (1600, 200), (1600, 1600))

# (H, W) of the processed (×2 downsampled) images, sorted by area then width.
IM2MARKUP_BUCKETS: tuple[tuple[int, int], ...] = tuple(
    sorted(((h // 2, w // 2) for w, h in _IM2MARKUP_BUCKETS_WH_FULL),
           key=lambda hw: (hw[0] * hw[1], hw[1])))

Bucket = tuple[int, int]


def parse_buckets(spec) -> tuple[Bucket, ...]:
  """Accepts 'im2markup', a list of (H, W) pairs, or 'HxW,HxW'."""
  if spec is None or spec == "im2markup":
    return IM2MARKUP_BUCKETS
  if isinstance(spec, str):
    try:
      pairs = [tuple(int(v) for v in s.split("x")) for s in spec.split(",")]
    except ValueError as e:
      raise ValueError(
          f"Bad bucket list {spec!r}: write 'im2markup' or 'HxW,HxW,…' "
          "(e.g. '40x160,50x200').") from e
  else:
    pairs = [tuple(int(v) for v in p) for p in spec]
  if not pairs or any(len(p) != 2 or min(p) <= 0 for p in pairs):
    raise ValueError(f"Bad bucket list {spec!r}: need positive (H, W) pairs.")
  return tuple(sorted(set(pairs), key=lambda hw: (hw[0] * hw[1], hw[1])))


def smallest_bucket(h: int, w: int, buckets: Sequence[Bucket]) -> Bucket | None:
  """The smallest-area bucket that holds an h×w image, or None."""
  fits = [b for b in buckets if b[0] >= h and b[1] >= w]
  if not fits:
    return None
  return min(fits, key=lambda hw: (hw[0] * hw[1], hw[1]))


def filter_buckets(buckets: Sequence[Bucket], max_h: int,
                   max_w: int) -> tuple[Bucket, ...]:
  """Buckets that can hold an image passing the size filter."""
  return tuple(b for b in buckets if b[0] <= max_h and b[1] <= max_w) or tuple(buckets)
