"""The official im2latex-100k file layout: its one reader and one writer.

  im2latex_formulas.norm.lst            one normalized formula per line
  im2latex_{train,validate,test}_filter.lst   `<image name> <formula index>`
  formula_images_processed.tar.gz       `formula_images_processed/<name>.png`
                                         (or an extracted directory)

The TFDS builder, `merge-data`, `render`, `render-screens` and the
screenshot benchmark all go through this module, so a split name maps to one
file name everywhere (`validation` -> `im2latex_validate_filter.lst`).
Writers may add `render_params.jsonl` (one JSON object per image: how it was
made) and `render_failures.tsv`; readers ignore both. No TensorFlow here.
"""

from __future__ import annotations

import json
import os
import tarfile
import zlib
from typing import Any, Iterable, Sequence

import numpy as np

OFFICIAL_URL = "https://im2markup.yuntiandeng.com/data/"
FORMULAS_FILE = "im2latex_formulas.norm.lst"
IMAGES_TAR = "formula_images_processed.tar.gz"
IMAGES_DIR = "formula_images_processed"
SPLIT_FILES = {
    "train": "im2latex_train_filter.lst",
    "validation": "im2latex_validate_filter.lst",
    "test": "im2latex_test_filter.lst",
}


class DataFormatError(ValueError):
  """A data dir that does not hold the official layout."""


def read_formulas(path: str) -> list[str]:
  """Formula k is line k of the file (lines end with '\\n'; a final newline
  ends the last line, it does not start an empty one).

  Raises:
    DataFormatError: the file is not UTF-8 (the message names the line).
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise DataFormatError(
        f"{path}:{line}: byte 0x{data[e.start]:02x} is not UTF-8; the formula "
        "file must be UTF-8 text (re-download it, or convert it with iconv)"
    ) from None
  # The official file has a few lines with stray '\r'; im2markup splits on
  # '\n' only, so formula indices count '\n'-terminated lines.
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line.strip() for line in lines]


def read_split_list(path: str, num_formulas: int) -> list[tuple[str, int]]:
  """Parses `<image name> <formula index>` lines, checking every index."""
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
        raise DataFormatError(
            f"{path}:{lineno}: expected '<image name> <formula index>', got "
            f"{line.strip()!r}.")
      name, idx = parts[0], int(parts[1])
      if not 0 <= idx < num_formulas:
        raise DataFormatError(
            f"{path}:{lineno}: formula index {idx} is out of range: "
            f"{FORMULAS_FILE} has {num_formulas} lines (0..{num_formulas - 1}). "
            "Are the list and the formula file from the same release?")
      if not name.endswith(".png"):
        name += ".png"
      out.append((name, idx))
  return out


def parse_list_arg(arg: str) -> tuple[str, int | None, int | None]:
  """`FILE` or `FILE:START:STOP` (a slice of its lines, as `validation[a:b]`)
  -> (path, start, stop)."""
  parts = arg.rsplit(":", 2)
  if len(parts) == 3 and all(p == "" or p.lstrip("-").isdigit() for p in parts[1:]):
    return parts[0], (int(parts[1]) if parts[1] else None), (
        int(parts[2]) if parts[2] else None)
  return arg, None, None


def read_split_list_arg(arg: str, num_formulas: int) -> list[tuple[str, int]]:
  """read_split_list of a `FILE[:START:STOP]` argument (parse_list_arg)."""
  path, start, stop = parse_list_arg(arg)
  return read_split_list(path, num_formulas)[start:stop]


def check_data_dir(path: str) -> list[str]:
  """Returns the splits present in a data dir, or raises a clear error."""
  if not os.path.isdir(path):
    raise DataFormatError(
        f"Data dir {path!r} does not exist. Point config.input.manual_dir at "
        f"a folder with {FORMULAS_FILE}, the *_filter.lst files and "
        f"{IMAGES_TAR} from {OFFICIAL_URL} (or set it to None to download).")
  missing = [f for f in (FORMULAS_FILE,) if not os.path.exists(os.path.join(path, f))]
  if not (os.path.exists(os.path.join(path, IMAGES_TAR)) or
          os.path.isdir(os.path.join(path, IMAGES_DIR))):
    missing.append(IMAGES_TAR)
  splits = [s for s, f in SPLIT_FILES.items() if os.path.exists(os.path.join(path, f))]
  if not splits:
    missing.append(" or ".join(SPLIT_FILES.values()))
  if missing:
    raise DataFormatError(
        f"Data dir {path!r} lacks {', '.join(missing)}. Expected the official "
        f"im2latex-100k layout; download the files from {OFFICIAL_URL}.")
  return splits


def iter_images(images_path: str):
  """Yields (basename, png bytes) from the tarball or the directory."""
  if os.path.isdir(images_path):
    for name in sorted(os.listdir(images_path)):
      with open(os.path.join(images_path, name), "rb") as f:
        yield name, f.read()
    return
  try:
    with tarfile.open(images_path, "r:gz") as tar:
      for member in tar:
        if member.isfile():
          yield os.path.basename(member.name), tar.extractfile(member).read()
  except (EOFError, tarfile.TarError, zlib.error, OSError) as e:
    raise DataFormatError(
        f"{images_path} is truncated or corrupt ({type(e).__name__}: {e}); an "
        "interrupted download leaves such a file: delete it and download it "
        f"again from {OFFICIAL_URL}") from None


# Written next to the official files by the renderers.
PARAMS_FILE = "render_params.jsonl"
FAILURES_FILE = "render_failures.tsv"


def split_file(split: str) -> str:
  """The list file of a split; a clear error for an unknown split name."""
  try:
    # 'validate' is the official file's own spelling of the split.
    return SPLIT_FILES['validation' if split == 'validate' else split]
  except KeyError:
    raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_FILES)} "
                     "(the builder reads only these)") from None


def write_dataset(out: str, formulas: Sequence[str], split: str,
                  images: Iterable[tuple[int, str, np.ndarray]], *,
                  params: dict[str, dict[str, Any]] | None = None,
                  failures: Sequence[tuple[int, str]] = ()) -> int:
  """Writes one split of a dataset in the official layout.

  Args:
    out: output directory (created).
    formulas: every formula; line k of the formula file is formula k.
    split: 'train', 'validation' or 'test'.
    images: (formula index, image name, uint8 [H, W] grayscale or [H, W, 3]
      RGB) triples.
    params: image name -> how it was made, written to PARAMS_FILE.
    failures: (formula index, reason) of the formulas that have no image.

  Returns:
    The number of images written.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  list_name = split_file(split)
  img_dir = os.path.join(out, IMAGES_DIR)
  os.makedirs(img_dir, exist_ok=True)
  with open(os.path.join(out, FORMULAS_FILE), "w", encoding="utf-8") as f:
    f.writelines(x + "\n" for x in formulas)
  n = 0
  with open(os.path.join(out, list_name), "w", encoding="utf-8") as lst:
    for idx, name, image in images:
      Image.fromarray(np.asarray(image, np.uint8)).save(
          os.path.join(img_dir, name))
      lst.write(f"{name} {idx}\n")
      n += 1
  if params is not None:
    with open(os.path.join(out, PARAMS_FILE), "w", encoding="utf-8") as f:
      for name in sorted(params):
        f.write(json.dumps({"image": name, **params[name]}, sort_keys=True) + "\n")
  with open(os.path.join(out, FAILURES_FILE), "w", encoding="utf-8") as f:
    for idx, reason in failures:
      reason = " ".join(str(reason).split())
      f.write(f"{idx}\t{reason}\t{formulas[idx]}\n")
  return n


def read_params(path: str) -> dict[str, dict[str, Any]]:
  """image name -> its PARAMS_FILE record (empty if the dir has none)."""
  p = os.path.join(path, PARAMS_FILE)
  if not os.path.exists(p):
    return {}
  with open(p, encoding="utf-8") as f:
    recs = [json.loads(line) for line in f if line.strip()]
  return {r["image"]: r for r in recs}


def source_fingerprint(path: str) -> str:
  """A digest of a data dir's content: the formula and split lists hashed,
  the images by size and modification time (a changed list, or images
  replaced, give another digest)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  h = hashlib.sha1()
  for name in [FORMULAS_FILE] + sorted(SPLIT_FILES.values()):
    p = os.path.join(path, name)
    if os.path.exists(p):
      h.update(name.encode())
      with open(p, "rb") as f:
        h.update(hashlib.sha1(f.read()).digest())
  images = images_path(path)
  if os.path.isdir(images):
    with os.scandir(images) as it:
      stats = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in it)
    h.update(repr(stats).encode())
  elif os.path.exists(images):
    st = os.stat(images)
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
  return h.hexdigest()


def images_path(src: str) -> str:
  """The images of a data dir: the extracted folder if present, else the tar."""
  d = os.path.join(src, IMAGES_DIR)
  return d if os.path.isdir(d) else os.path.join(src, IMAGES_TAR)
