"""`im2latex-jax predict`: LaTeX for image files from the command line.

    im2latex-jax predict formula.png scans/ - --workdir /tmp/run --beam 5 --json

Arguments are files, directories (every image directly inside, sorted by name)
or `-` for image bytes on stdin. Prints one line per image to stdout,
`<path>\t<latex>`, or with --json one JSON object per line (`latex`, the
token list `tokens`, `token_probs`, `logprob`, `low_confidence` with its `warnings`, the
applied `scale`, `timings`). An image that cannot be read or predicted prints
`<path>: error: <reason>` to stderr (and with --json a `{"path", "error"}`
record to stdout) and the others go on. Exit status: 0 only if every image
was predicted, 1 if any failed, 2 for a usage or model error.

`latex` is idiomatic LaTeX (`\\tanh^{2}`, `C_{n1}`: latex.idiomatic, renders as
the tokens do); `--format tokens` gives the model's token form instead
(`\\operatorname { t a n h } ^ { 2 }`), the form the metrics score.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Iterator, TextIO

import numpy as np

from im2latex_jax.infer.predictor import confidence_json as predictor_confidence
from im2latex_jax.infer import image_io

# File extensions a directory argument is searched for (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
STDIN = "-"


def _expand(paths: list[str]) -> Iterator[tuple[str, str | None]]:
  """Yields (path, error) for each image named by the arguments, in order."""
  for path in paths:
    if path == STDIN:
      yield path, None
    elif os.path.isdir(path):
      names = sorted(
          n for n in os.listdir(path)
          if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
          and os.path.isfile(os.path.join(path, n)))
      if not names:
        yield path, "no images in this directory"
      for name in names:
        yield os.path.join(path, name), None
    elif os.path.isfile(path):
      yield path, None
    else:
      yield path, "no such file or directory"


def _read(path: str) -> np.ndarray:
  if path == STDIN:
    data = sys.stdin.buffer.read()
  else:
    with open(path, "rb") as f:
      data = f.read(image_io.MAX_PIXELS * 4 + 1)  # a bound, not a format check
  return image_io.decode_image(data)


# --format: what `latex` holds (text output and JSON alike).
FORMATS = ("latex", "tokens")


def answer_latex(pred, fmt: str = "latex") -> str:
  """The answer's LaTeX: idiomatic (`latex`) or the model's token form."""
  return pred.latex if fmt == "tokens" else pred.idiomatic


def _record(path: str, pred, beam: int, fmt: str = "latex") -> dict[str, Any]:
  return {
      "path": path,
      "latex": answer_latex(pred, fmt),
      "tokens": list(pred.tokens),
      "token_probs": [round(float(p), 6) for p in pred.token_probs],
      "logprob": float(pred.logprob),
      **predictor_confidence(pred),
      "beam": beam,
      "timings": {k: round(float(v), 6) for k, v in pred.timings.items()},
  }


class _Runner:
  """Batches decoded images through the predictor and prints results in order."""

  def __init__(self, predictor, beam: int, as_json: bool, out: TextIO,
               err: TextIO, fmt: str = "latex"):
    self.predictor, self.beam, self.as_json = predictor, beam, as_json
    self.fmt = fmt
    self.out, self.err = out, err
    self.failed = 0

  def fail(self, path: str, reason: str):
    self.failed += 1
    print(f"{path}: error: {reason}", file=self.err, flush=True)
    if self.as_json:
      print(json.dumps({"path": path, "error": reason}, ensure_ascii=False),
            file=self.out, flush=True)

  def run_batch(self, batch: list[tuple[str, np.ndarray | str]]):
    """Predicts the images of a batch and prints every entry in order; an
    entry holding a string instead of an image is a read error."""
    images = [im for _, im in batch if not isinstance(im, str)]
    # One result per image: a Prediction, or the error that refused it.
    preds = iter(self.predictor.predict_each(images, beam_size=self.beam)
                 if images else [])
    for path, im in batch:
      pred = im if isinstance(im, str) else next(preds)
      if isinstance(pred, (str, Exception)):
        self.fail(path, str(pred))
        continue
      if self.as_json:
        line = json.dumps(_record(path, pred, self.beam, self.fmt),
                          ensure_ascii=False)
      else:
        line = f"{path}\t{answer_latex(pred, self.fmt)}"
      print(line, file=self.out, flush=True)


def main(argv: list[str], predictor=None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
  """Runs `im2latex-jax predict`.

  Args:
    argv: like sys.argv, the program name first (as im2latex_jax.main
      passes), then the arguments.
    predictor: a Predictor to use instead of `load_predictor(--workdir)`
      (tests inject a FakePredictor).
    out: where results go; default stdout.
    err: where per-image errors go; default stderr.

  Returns:
    0 if every image was predicted, 1 if any failed, 2 for usage or model
    errors.
  """
  out = out or sys.stdout
  err = err or sys.stderr
  parser = argparse.ArgumentParser(
      prog=argv[0] if argv else "im2latex-jax predict",
      description="Predict LaTeX for formula images.")
  parser.add_argument("images", nargs="+", metavar="IMAGE",
                      help="image files, directories of images, or - for stdin")
  parser.add_argument("--workdir", default=None,
                      help="training workdir; default: the shipped model")
  parser.add_argument("--beam", type=int, default=1,
                      help="beam size; 1 is greedy decoding")
  parser.add_argument("--json", action="store_true",
                      help="one JSON object per line instead of path<TAB>latex")
  parser.add_argument("--format", choices=FORMATS, default="latex",
                      help="latex: idiomatic LaTeX (\\tanh^{2}); tokens: the "
                      "model's normalized token form (\\operatorname { t a n h }"
                      " ^ { 2 }), as metrics score it. JSON always has the "
                      "token list in `tokens`")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="images per predict() call")
  args = parser.parse_args(argv[1:])
  if args.beam < 1:
    print(f"error: --beam {args.beam} must be at least 1", file=err)
    return 2
  if args.batch_size < 1:
    print(f"error: --batch-size {args.batch_size} must be at least 1",
          file=err)
    return 2
  if args.images.count(STDIN) > 1:
    print("error: - (stdin) can be given only once", file=err)
    return 2

  if predictor is None:
    # Looked up in sys.modules at call time (tests swap the module).
    predictor_lib = importlib.import_module("im2latex_jax.infer.predictor")
    try:
      predictor = predictor_lib.load_predictor(args.workdir)
    except (predictor_lib.NoModelError, ValueError) as e:
      print(f"error: {e}", file=err)
      return 2

  runner = _Runner(predictor, args.beam, args.json, out, err, args.format)
  batch: list[tuple[str, np.ndarray | str]] = []
  for path, error in _expand(args.images):
    if error is None:
      try:
        batch.append((path, _read(path)))
      except (image_io.UploadError, OSError) as e:
        batch.append((path, str(e)))
    else:
      batch.append((path, error))
    if sum(not isinstance(im, str) for _, im in batch) == args.batch_size:
      runner.run_batch(batch)
      batch = []
  runner.run_batch(batch)
  return 1 if runner.failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
