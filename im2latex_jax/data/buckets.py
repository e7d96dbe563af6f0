"""im2markup's image buckets.

im2markup pads every cropped formula onto the smallest of a fixed list of
canvas sizes and then downsamples ×2, so the processed im2latex-100k images
come in exactly these (height, width) shapes. Batching by bucket gives one
image shape per batch and a small, fixed set of compiled shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

# The one bucket table: (W, H) before the x2 downsampling, in the order
# im2markup's preprocess_images.py lists and tries them (first fit wins).
IM2MARKUP_BUCKETS_WH: tuple[tuple[int, int], ...] = (
    (240, 100), (320, 80), (400, 80), (400, 100), (480, 80), (480, 100),
    (560, 80), (560, 100), (640, 80), (640, 100), (720, 80), (720, 100),
    (720, 120), (720, 200), (800, 100), (800, 320), (1000, 200), (1000, 400),
    (1200, 200), (1600, 200), (1600, 1600))


def _by_area(pairs):
  return tuple(sorted(set(pairs), key=lambda hw: (hw[0] * hw[1], hw[1])))


# (H, W) of the processed (x2 downsampled) images, sorted by area then width:
# the training grid, and the canvases inference places images on.
IM2MARKUP_BUCKETS: tuple[tuple[int, int], ...] = _by_area(
    (h // 2, w // 2) for w, h in IM2MARKUP_BUCKETS_WH)

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
  return _by_area(pairs)


def first_fit(h: int, w: int, buckets: Sequence[Bucket]) -> Bucket | None:
  """The first bucket of `buckets`, in their order, that holds an h x w image.

  The one bucketing rule of the project. On `parse_buckets` lists (sorted by
  area) it is the smallest-area bucket: the rule of training and inference.
  On IM2MARKUP_BUCKETS_WH's order (swapped to (H, W)) it is im2markup's own
  rule, with which data/processing.py reproduces the dataset's images.
  """
  for b in buckets:
    if b[0] >= h and b[1] >= w:
      return tuple(b)
  return None
