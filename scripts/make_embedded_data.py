"""Cuts the embedded default dataset from a full im2latex-100k data dir.

The embedded set (im2latex_jax/data/embedded/, < 2 MB) is what the quickstart
and the tests train on with no download. It keeps short formulas on the small
buckets so that a 2-core CPU run shows learning in minutes; it is a demo set,
not a benchmark.

  python scripts/make_embedded_data.py --src ../shared/data/im2latex100k
"""

import argparse
import io
import os
import tarfile

from PIL import Image

from im2latex_jax.data import im2latex100k as ds

OUT = os.path.join(os.path.dirname(__file__), "..", "im2latex_jax", "data", "embedded")


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--src", required=True)
  p.add_argument("--train", type=int, default=480)
  p.add_argument("--validation", type=int, default=120)
  p.add_argument("--max_tokens", type=int, default=40)
  p.add_argument("--max_h", type=int, default=50)
  p.add_argument("--max_w", type=int, default=240)
  args = p.parse_args()

  formulas = ds.read_formulas(os.path.join(args.src, ds.FORMULAS_FILE))
  images = {}
  with tarfile.open(os.path.join(args.src, ds.IMAGES_TAR)) as tar:
    for m in tar:
      if m.isfile():
        images[os.path.basename(m.name)] = tar.extractfile(m).read()

  out_formulas, lists = [], {}
  for split, want in (("train", args.train), ("validation", args.validation)):
    pairs = ds.read_split_list(os.path.join(args.src, ds.SPLIT_FILES[split]), len(formulas))
    kept = []
    for name, idx in pairs:
      if len(kept) == want:
        break
      w, h = Image.open(io.BytesIO(images[name])).size
      if h <= args.max_h and w <= args.max_w and len(formulas[idx].split()) <= args.max_tokens:
        kept.append((name, len(out_formulas)))
        out_formulas.append(formulas[idx])
    lists[split] = kept

  os.makedirs(OUT, exist_ok=True)
  with open(os.path.join(OUT, ds.FORMULAS_FILE), "w") as f:
    f.write("\n".join(out_formulas) + "\n")
  for split, kept in lists.items():
    with open(os.path.join(OUT, ds.SPLIT_FILES[split]), "w") as f:
      f.writelines(f"{n} {i}\n" for n, i in kept)
  with tarfile.open(os.path.join(OUT, ds.IMAGES_TAR), "w:gz") as tar:
    for kept in lists.values():
      for name, _ in kept:
        info = tarfile.TarInfo(f"{ds.IMAGES_DIR}/{name}")
        info.size = len(images[name])
        info.mtime = 0
        tar.addfile(info, io.BytesIO(images[name]))
  print({k: len(v) for k, v in lists.items()}, "->", os.path.abspath(OUT))


if __name__ == "__main__":
  main()
