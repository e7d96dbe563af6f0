"""`im2latex-jax merge-data`: several official-layout data dirs into one.

Generated data (`im2latex-jax render`) and the real data share one layout, so
a training set that mixes them is one merged dir, read by the same TFDS
builder:

  im2latex-jax merge-data --out data/mixed \\
      --add /path/to/im2latex100k --add data/generated:train

`DIR:split,split` takes only those splits of a source (default: all of them);
image names are prefixed with the source's position when they would collide.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from im2latex_jax.data import layout as ds


def merge(sources: list[tuple[str, list[str] | None]], out: str) -> dict[str, int]:
  """Writes the merged dir; returns examples per split."""
  os.makedirs(os.path.join(out, ds.IMAGES_DIR), exist_ok=True)
  formulas_out: list[str] = []
  lists: dict[str, list[str]] = {}
  seen_names: set[str] = set()
  for i, (src, splits) in enumerate(sources):
    present = ds.check_data_dir(src)
    formulas = ds.read_formulas(os.path.join(src, ds.FORMULAS_FILE))
    wanted = {}
    for split in splits or present:
      if split not in present:
        raise ds.DataFormatError(f"{src} has no {split!r} split (it has {present}).")
      for name, idx in ds.read_split_list(os.path.join(src, ds.SPLIT_FILES[split]), len(formulas)):
        new_name = name if name not in seen_names else f"s{i}_{name}"
        seen_names.add(new_name)
        wanted[name] = (new_name, split, idx)
    for name, data in ds.iter_images(ds.images_path(src)):
      if name in wanted:
        new_name, split, idx = wanted.pop(name)
        with open(os.path.join(out, ds.IMAGES_DIR, new_name), "wb") as f:
          f.write(data)
        lists.setdefault(split, []).append(f"{new_name} {len(formulas_out)}\n")
        formulas_out.append(formulas[idx])
    if wanted:
      raise ds.DataFormatError(f"{len(wanted)} images listed in {src} are missing "
                               f"(first: {sorted(wanted)[:3]}).")
  with open(os.path.join(out, ds.FORMULAS_FILE), "w", encoding="utf-8") as f:
    f.write("".join(x + "\n" for x in formulas_out))
  for split, lines in lists.items():
    with open(os.path.join(out, ds.SPLIT_FILES[split]), "w") as f:
      f.writelines(lines)
  return {k: len(v) for k, v in lists.items()}


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(prog=argv[0], description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--add", action="append", required=True, help="DIR or DIR:split,split")
  p.add_argument("--out", required=True)
  args = p.parse_args(argv[1:])
  if os.path.exists(args.out) and os.listdir(args.out):
    sys.stderr.write(f"error: {args.out} exists and is not empty; choose a new --out.\n")
    return 2
  sources = []
  for spec in args.add:
    path, _, splits = spec.partition(":")
    sources.append((path, splits.split(",") if splits else None))
  try:
    counts = merge(sources, args.out)
  except ds.DataFormatError as e:
    shutil.rmtree(args.out, ignore_errors=True)
    sys.stderr.write(f"error: {e}\n")
    return 2
  print(f"merged {len(sources)} sources -> {args.out}: {counts}")
  return 0
