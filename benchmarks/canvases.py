"""Screenshot-benchmark BLEU of the glyph-size search on the training buckets
vs on preprocess.canvas_ladder's fine canvases (`Predictor(canvases=)`), same
images, same model: whether the encoder can read less white padding.

  python benchmarks/canvases.py --data ../shared/data/im2latex100k --n 50 \\
      --conditions katex-16px,mathjax-16px,pdf-cm-10pt-96dpi --out /tmp/canvases

Writes <out>/<canvases>/table.md and results.json (robustness's layout; the
drawn images are shared under <out>/images via a symlink).
"""

import argparse
import os
import sys

from im2latex_jax.evaluation import robustness
from im2latex_jax.infer import predictor as predictor_lib


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", required=True)
  p.add_argument("--n", type=int, default=50)
  p.add_argument("--conditions", required=True)
  p.add_argument("--workdir", default=None)
  p.add_argument("--out", required=True)
  args = p.parse_args(argv[1:])
  loaded = predictor_lib.load_predictor(args.workdir)._loaded  # pylint: disable=protected-access
  images = os.path.join(os.path.abspath(args.out), "images")
  for canvases in ("buckets", "fine"):
    out = os.path.join(args.out, canvases)
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, "images")):
      os.makedirs(images, exist_ok=True)
      os.symlink(images, os.path.join(out, "images"))
    rc = robustness.main(
        ["robustness", "--data", args.data, "--n", str(args.n), "--conditions",
         args.conditions, "--out", out],
        predictor=predictor_lib.Predictor(loaded, canvases=canvases))
    if rc:
      return rc
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
