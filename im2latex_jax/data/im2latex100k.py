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

import numpy as np
import tensorflow_datasets as tfds

from im2latex_jax.data.layout import (  # pylint: disable=unused-import
    DataFormatError, FORMULAS_FILE, IMAGES_DIR, IMAGES_TAR, OFFICIAL_URL,
    SPLIT_FILES, check_data_dir, images_path, iter_images, read_formulas,
    read_split_list)


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
    for name, data in iter_images(images_path):
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
