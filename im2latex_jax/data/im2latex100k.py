"""TFDS builder for im2latex-100k in its official processed layout.

The official release (https://im2markup.yuntiandeng.com/data/) is four kinds
of file, and this builder reads them from a download or from a manual dir:

  im2latex_formulas.norm.lst            one normalized formula per line
  im2latex_{train,validate,test}_filter.lst   `<image name> <formula index>`
  formula_images_processed.tar.gz       `formula_images_processed/<name>.png`
                                         (a `formula_images_processed/`
                                         directory is accepted too)

Splits whose list file is absent are simply absent. The same layout is what
`im2latex-jax render` writes for generated data and what the embedded
default dataset uses, so every source flows through one builder.
"""

from __future__ import annotations

import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds

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
  # The official file has a few lines with stray '\r'; im2markup splits on
  # '\n' only, so formula indices count '\n'-terminated lines.
  with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
    return [line.rstrip("\n").strip() for line in f.read().split("\n")]


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


def _iter_images(images_path: str):
  """Yields (basename, png bytes) from the tarball or the directory."""
  if os.path.isdir(images_path):
    for name in sorted(os.listdir(images_path)):
      with open(os.path.join(images_path, name), "rb") as f:
        yield name, f.read()
    return
  with tarfile.open(images_path, "r:gz") as tar:
    for member in tar:
      if member.isfile():
        yield os.path.basename(member.name), tar.extractfile(member).read()


def _decode_gray(name: str, data: bytes) -> np.ndarray:
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as im:
      im = im.convert("L")
      arr = np.asarray(im, dtype=np.uint8)
  except Exception as e:  # PIL raises many types for broken files.
    raise DataFormatError(
        f"Image {name!r} could not be read ({e}); re-download "
        f"{IMAGES_TAR}.") from e
  return arr[:, :, None]


class Im2latex100k(tfds.core.GeneratorBasedBuilder):
  """im2latex-100k (Deng et al. 2017), processed images and normalized formulas."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Official processed release layout.",
                   "1.1.0": "Examples kept in the order of the split lists."}

  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put the official processed files in the manual dir: {FORMULAS_FILE},
  {', '.join(SPLIT_FILES.values())} (any subset of splits) and {IMAGES_TAR}
  (or an extracted {IMAGES_DIR}/ folder). They are served at {OFFICIAL_URL}.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            "formula": tfds.features.Text(),
            "image_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "formula"),
        # Keep the list order, so that 'validation[7475:]' means the last
        # 1,000 lines of the validation list (the reduced-label protocol's
        # holdout) and not a hash-ordered subset.
        disable_shuffling=True,
        homepage="https://github.com/harvardnlp/im2markup",
        citation="""@inproceedings{deng2017image,
  title={Image-to-Markup Generation with Coarse-to-Fine Attention},
  author={Deng, Yuntian and Kanervisto, Anssi and Ling, Jeffrey and Rush, Alexander M},
  booktitle={ICML}, year={2017}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual = None
    try:
      manual = dl_manager.manual_dir
    except AssertionError:  # No manual dir configured.
      manual = None
    if manual is not None and os.path.isdir(os.fspath(manual)):
      root = os.fspath(manual)
      splits = check_data_dir(root)
      files = {k: os.path.join(root, v) for k, v in SPLIT_FILES.items() if k in splits}
      formulas_path = os.path.join(root, FORMULAS_FILE)
      images = os.path.join(root, IMAGES_DIR)
      if not os.path.isdir(images):
        images = os.path.join(root, IMAGES_TAR)
    else:
      paths = dl_manager.download({
          "formulas": OFFICIAL_URL + FORMULAS_FILE,
          "images": OFFICIAL_URL + IMAGES_TAR,
          **{k: OFFICIAL_URL + v for k, v in SPLIT_FILES.items()},
      })
      files = {k: os.fspath(paths[k]) for k in SPLIT_FILES}
      formulas_path, images = os.fspath(paths["formulas"]), os.fspath(paths["images"])
    formulas = read_formulas(formulas_path)
    return {
        split: self._generate_examples(read_split_list(path, len(formulas)),
                                       formulas, images)
        for split, path in files.items()
    }

  def _generate_examples(self, pairs, formulas, images_path):
    # The archive is read once and only this split's (encoded) images are
    # kept in memory, so that examples can be yielded in list order.
    wanted = {name: idx for name, idx in pairs}
    found = {}
    for name, data in _iter_images(images_path):
      if name in wanted:
        found[name] = data
    for name, idx in pairs:
      if name in found:
        yield name, {
            "image": _decode_gray(name, found[name]),
            "formula": formulas[idx],
            "image_name": name,
        }
    missing = [n for n in wanted if n not in found]
    if missing:
      raise DataFormatError(
          f"{len(missing)} images named in the split list are not in "
          f"{images_path} (first: {missing[:3]}). The list and the image "
          "archive must come from the same release.")
