"""`im2latex-jax evaluate`: a checkpoint's predictions and metrics on a split.

    im2latex-jax evaluate --workdir W [--split S] [--beam K] [--step best|latest|N]
        [--max-examples N] [--image-metrics] [--length-penalty A]
        [--batch-size N] [--max-len L] [--manual-dir DIR]

Restores the checkpoint, decodes the split (greedy for --beam 1, else beam
search) and writes under `<workdir>/eval/<split>_beam<K>/`:

- `predictions.tsv`: a header, then `image  gold  prediction  logprob` per
  example (tab-separated; formulas are space-tokenized and hold no tabs);
- `metrics.json`: text metrics (`bleu4` 0..100, `edit_accuracy` and
  `exact_match` 0..1, as metrics.py), teacher-forced `perplexity` and
  `token_accuracy`, image metrics with --image-metrics (0..1), `examples`,
  `decode_seconds`, `images_per_sec`, and the same without the first batch of
  each shape (`steady_images_per_sec`, which excludes compilation).

Prints a markdown table (header and one row, percentages) to stdout. A
user error (no checkpoint, unknown split, bad flag, TeX missing) prints one
`error: ...` line and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

from im2latex_jax import console

TABLE_HEADER = ("| split | beam | BLEU-4 | edit acc | exact | img exact | img exact -ws "
                "| img edit |\n|---|---|---|---|---|---|---|---|")


class UsageError(ValueError):
  """A bad argument; the message names it and the fix."""


def _parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog=argv[0] if argv else "im2latex-jax evaluate",
      description="Decode a split with a trained checkpoint and score it as im2markup.")
  parser.add_argument("--workdir", required=True, help="training workdir")
  parser.add_argument("--split", default=None,
                      help="TFDS split, slices allowed; default: the config's eval_split")
  parser.add_argument("--beam", type=int, default=1, help="beam size; 1 is greedy")
  parser.add_argument("--step", default="best", help="'best', 'latest' or a step number")
  parser.add_argument("--max-examples", type=int, default=None,
                      help="evaluate only the first N examples of the split")
  parser.add_argument("--image-metrics", action="store_true",
                      help="also render gold and predictions with pdflatex and compare images")
  parser.add_argument("--length-penalty", type=float, default=None,
                      help="GNMT alpha for beam search; default config.evals.length_penalty")
  parser.add_argument("--eos-bias", type=float, default=None,
                      help="added to EOS's log-probability in greedy decoding (< 0: end "
                      "later); default config.evals.eos_bias")
  parser.add_argument("--batch-size", type=int, default=None,
                      help="examples per decode batch; default config.input.eval_batch_size")
  parser.add_argument("--max-len", type=int, default=None,
                      help="max decoded tokens; default config.evals.max_decode_len")
  parser.add_argument("--manual-dir", default=None,
                      help="data source overriding config.input.manual_dir "
                      "('embedded' or a directory in the official layout)")
  parser.add_argument("--workers", type=int, default=2,
                      help="pdflatex processes for --image-metrics")
  parser.add_argument("--verbose", action="store_true",
                      help="also the libraries' INFO lines, TFDS's bars")
  args = parser.parse_args(argv[1:])
  for name in ("beam", "max_examples", "batch_size", "max_len", "workers"):
    value = getattr(args, name)
    if value is not None and value < 1:
      flag = "--" + name.replace("_", "-")
      raise UsageError(f"{flag} {value} must be at least 1.")
  if args.step not in ("best", "latest") and not re.fullmatch(r"\d+", args.step):
    raise UsageError(f"--step {args.step!r}: use 'best', 'latest' or a step number.")
  return args


def _pct(x: float | None) -> str:
  return "–" if x is None else f"{100 * x:.2f}"


def table_row(split: str, beam: int, m: dict[str, Any]) -> str:
  """`| split | beam | BLEU-4 | edit acc | exact | img exact | img exact -ws | img edit |`."""
  cells = [split, str(beam), f"{m['bleu4']:.2f}", _pct(m["edit_accuracy"]),
           _pct(m["exact_match"]), _pct(m.get("image_exact_match")),
           _pct(m.get("image_exact_match_ws")), _pct(m.get("image_edit_accuracy"))]
  return "| " + " | ".join(cells) + " |"


def _out_dir(workdir: str, split: str, beam: int, eos_bias: float = 0.0) -> str:
  safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_")
  bias = f"_eos{eos_bias:g}" if eos_bias else ""
  return os.path.join(workdir, "eval", f"{safe}_beam{beam}{bias}")


PREDICTIONS_COLUMNS = ("image", "gold", "prediction", "logprob")


def write_predictions(path: str, predictions) -> None:
  def clean(s: str) -> str:
    return s.replace("\t", " ").replace("\n", " ")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\t".join(PREDICTIONS_COLUMNS) + "\n")
    for p in predictions:
      f.write(f"{clean(p.image_name)}\t{clean(p.gold)}\t{clean(p.prediction)}\t"
              f"{p.logprob:.6f}\n")


def read_predictions(path: str) -> dict[str, tuple[str, str, float]]:
  """A predictions.tsv of `write_predictions` as {image: (gold, prediction, logprob)}."""
  out = {}
  with open(path, encoding="utf-8") as f:
    header = tuple(f.readline().rstrip("\n").split("\t"))
    if header[:3] != PREDICTIONS_COLUMNS[:3]:
      raise ValueError(f"{path}: not a predictions.tsv of `im2latex-jax evaluate` "
                       f"(header {list(header[:3])}, want {', '.join(PREDICTIONS_COLUMNS)}).")
    for line in f:
      name, gold, pred, *rest = line.rstrip("\n").split("\t")
      out[name] = (gold, pred, float(rest[0]) if rest else float("nan"))
  return out


def evaluate(args: argparse.Namespace) -> tuple[str, dict[str, Any], str]:
  """Runs the evaluation; returns (table row, metrics, output directory)."""
  import jax  # pylint: disable=g-import-not-at-top
  from im2latex_jax.evaluation import evaluators  # pylint: disable=g-import-not-at-top
  from im2latex_jax.infer import inference  # pylint: disable=g-import-not-at-top
  from im2latex_jax import loading  # pylint: disable=g-import-not-at-top
  from im2latex_jax import sharding  # pylint: disable=g-import-not-at-top
  from im2latex_jax import steps  # pylint: disable=g-import-not-at-top
  from im2latex_jax.data import sources  # pylint: disable=g-import-not-at-top

  if args.image_metrics:
    from im2latex_jax.datagen import render  # pylint: disable=g-import-not-at-top
    try:
      render.check_tex()  # before minutes of decoding, not after
    except RuntimeError as e:
      raise UsageError(f"--image-metrics: {e}") from None
  loaded = loading.load_model(args.workdir, args.step)
  config = loaded.config
  workdir = os.path.abspath(os.path.expanduser(args.workdir))
  split = args.split or config.input.eval_split
  batch_size = args.batch_size or config.input.eval_batch_size
  max_len = args.max_len or config.evals.max_decode_len
  length_penalty = (config.evals.length_penalty if args.length_penalty is None
                    else args.length_penalty)
  eos_bias = float(config.evals.get("eos_bias", 0.0) if args.eos_bias is None
                   else args.eos_bias)
  if args.beam > 1:
    if args.eos_bias:
      raise UsageError(f"--eos-bias {args.eos_bias:g} is for greedy decoding (--beam 1); "
                       "beam search controls length with --length-penalty.")
    eos_bias = 0.0
  mesh = sharding.make_mesh()
  sharding.check_batch_size(batch_size, mesh, "--batch-size")
  if args.manual_dir is not None:
    with config.unlocked():
      config.input.manual_dir = args.manual_dir

  data = sources.get_data(config.input, vocab=loaded.vocab, need_train=False)
  if not data.has_split(split):
    raise UsageError(f"Split {split!r} is not in this dataset (the run's "
                     f"config.input.loader={config.input.get('loader', 'tfds')!r} source, "
                     f"which has {list(data.split_names)}); pass one of those (slices "
                     "allowed) as --split, or --manual-dir with a data dir that has it.")

  def batches(with_strings):
    return data.eval_batches(split, global_batch_size=batch_size, with_strings=with_strings,
                             max_examples=args.max_examples)

  variables = jax.device_put(loaded.variables, sharding.replicated(mesh))
  decode_fn = inference.make_decode_fn(loaded.model, beam_size=args.beam, max_len=max_len,
                                       length_penalty=length_penalty, eos_bias=eos_bias)
  timings: dict[str, float] = {}
  progress = console.Progress(args.max_examples, "examples", "decoded")
  preds = evaluators.decode_split(decode_fn, variables, loaded.vocab, batches(True), mesh,
                                  max_examples=args.max_examples, timings=timings,
                                  progress=progress.update)
  if not preds:
    raise UsageError(f"Split {split!r} has no example that fits the buckets "
                     f"{config.input.buckets} / token buckets {config.input.token_buckets}.")
  n = len(preds)
  m: dict[str, Any] = evaluators.text_metrics(preds)

  # Teacher forcing (the same step as training's evaluation). With a limit
  # that could not become a slice, this covers the whole (sliced) split.
  eval_step = jax.jit(steps.make_eval_step(loaded.model))
  loss = steps.evaluate_loss(eval_step, variables, batches(False), mesh)
  m.update(loss=loss["loss"], perplexity=loss["perplexity"],
           token_accuracy=loss["token_accuracy"])

  if args.image_metrics:
    from im2latex_jax.evaluation import image_metrics  # pylint: disable=g-import-not-at-top
    t = time.perf_counter()
    m.update(image_metrics.image_metrics([p.gold for p in preds],
                                         [p.prediction for p in preds],
                                         workers=args.workers))
    m["image_render_seconds"] = time.perf_counter() - t
    if m["image_num_evaluated"] < n:
      print(f"warning: {n - m['image_num_evaluated']} of {n} gold formulas did not render; "
            "image metrics leave them out.", file=sys.stderr)

  decode_s = timings["decode_seconds"]
  m.update(examples=n, decode_seconds=decode_s, images_per_sec=n / max(decode_s, 1e-9),
           split=split, beam=args.beam, step=loaded.step, max_decode_len=max_len,
           length_penalty=length_penalty, eos_bias=eos_bias, batch_size=batch_size,
           devices=mesh.devices.size)
  # Without the first batch of each shape, which carries the compilation.
  steady_s = decode_s - timings["first_batch_seconds"]
  steady_n = n - timings["first_batch_examples"]
  if steady_n > 0 and steady_s > 0:
    m.update(steady_examples=steady_n, steady_images_per_sec=steady_n / steady_s)

  out_dir = _out_dir(workdir, split, args.beam, eos_bias)
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    write_predictions(os.path.join(out_dir, "predictions.tsv"), preds)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
      json.dump(m, f, indent=2, sort_keys=True)
  return table_row(split, args.beam, m), m, out_dir


def main(argv: list[str]) -> int:
  """Runs `im2latex-jax evaluate`; 0 on success, 2 on a user error."""
  try:
    args = _parse_args(argv)
    console.setup(args.verbose)
  except SystemExit as e:  # argparse printed its own usage line
    return int(e.code or 0) and 2
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from im2latex_jax.infer import inference  # pylint: disable=g-import-not-at-top
  try:
    row, _, out_dir = evaluate(args)
  except (inference.WorkdirError, UsageError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(TABLE_HEADER)
  print(row, flush=True)
  print(f"wrote {out_dir}/predictions.tsv and metrics.json", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
