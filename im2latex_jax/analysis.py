"""Analysis for the notebooks: a model to look at, curves, data, attention, errors.

The notebooks in notebooks/ only call these functions and the package's own
API (input_pipeline, predictor, inference, evaluators), so what they show is
what the package computes:

    workdir = analysis.resolve_workdir()          # $IM2LATEX_WORKDIR, shipped, or a tiny run
    curves = analysis.read_metrics(workdir)       # {'eval/loss': (steps, values), ...}
    errors = analysis.example_errors(predictions) # per-example token edit distance
    analysis.errors_by_token_class(errors)        # which kinds of tokens are missed

matplotlib is imported only by the plotting functions.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import tempfile
from typing import Any, Iterable, Sequence

import ml_collections
import numpy as np
from rapidfuzz.distance import Levenshtein

from im2latex_jax import defaults
from im2latex_jax import workdir as workdir_lib

# Environment variable naming the workdir the notebooks analyse.
WORKDIR_ENV = "IM2LATEX_WORKDIR"
QUICKSTART_CONFIG = "configs/quickstart.py"  # a file of the repository
# Steps of the stand-in model trained when no workdir is given (~1 min on 2 cores).
FALLBACK_STEPS = 60


# ---------------------------------------------------------------- workdirs
def quickstart_config() -> ml_collections.ConfigDict:
  """configs/quickstart.py's config (the checkout's configs/ folder)."""
  path = defaults.repo_file(QUICKSTART_CONFIG)
  if path is None:
    raise FileNotFoundError(
        f"{QUICKSTART_CONFIG} {defaults.NOT_IN_PACKAGE}, or set ${WORKDIR_ENV} "
        "to a trained workdir instead.")
  return defaults.import_file(path).get_config()


def embedded_input_config(input_cfg: ml_collections.ConfigDict | None = None
                          ) -> ml_collections.ConfigDict:
  """A copy of `input_cfg` (default: quickstart's) reading the embedded data.

  Keeps the buckets of the model (so its images land on shapes it knows) but
  reads the train/validation splits shipped in the package.
  """
  cfg = ml_collections.ConfigDict((input_cfg or quickstart_config().input).to_dict())
  cfg.manual_dir = "embedded"
  cfg.data_dir = None
  cfg.train_split, cfg.eval_split, cfg.vocab_split = "train", "validation", "train"
  cfg.augment.enabled = False
  return cfg


def train_fallback_model(workdir: str, steps: int = FALLBACK_STEPS) -> str:
  """Trains quickstart for `steps` steps into `workdir` (resumes if there)."""
  from im2latex_jax import train_cli  # pylint: disable=g-import-not-at-top
  config = quickstart_config()
  config.num_train_steps = steps
  config.eval_every_steps = steps
  config.log_every_steps = max(steps // 6, 1)
  config.wandb.mode = "disabled"
  train_cli.train(config, workdir)
  return workdir


def resolve_workdir(*, need_metrics: bool = False, fallback_steps: int = FALLBACK_STEPS) -> str:
  """The workdir a notebook analyses.

  $IM2LATEX_WORKDIR if set; else the shipped model (im2latex_jax/assets/model)
  if it exists (and has metrics.jsonl when `need_metrics`); else a quickstart
  model trained for `fallback_steps` steps into a new temporary directory, so
  every notebook runs top to bottom on a fresh checkout.
  """
  from im2latex_jax.infer import predictor  # pylint: disable=g-import-not-at-top
  env = os.environ.get(WORKDIR_ENV)
  if env:
    if not os.path.isdir(env):
      raise FileNotFoundError(f"${WORKDIR_ENV}={env} is not a directory; point it at "
                              "the workdir of a training run or unset it.")
    return env
  shipped = predictor.SHIPPED_MODEL_DIR
  if os.path.exists(os.path.join(shipped, workdir_lib.CONFIG)) and (
      not need_metrics or os.path.exists(os.path.join(shipped, workdir_lib.METRICS))):
    return shipped
  workdir = tempfile.mkdtemp(prefix="im2latex_notebook_")
  print(f"No ${WORKDIR_ENV} and no shipped model: training quickstart for "
        f"{fallback_steps} steps into {workdir}.")
  return train_fallback_model(workdir, fallback_steps)


# ------------------------------------------------------------- metrics.jsonl
read_metrics = workdir_lib.read_metrics


# --------------------------------------------------------------------- data
@dataclasses.dataclass
class Example:
  image: np.ndarray  # uint8 [H, W], as stored in the dataset
  formula: str
  image_name: str


def load_examples(builder, split: str, max_examples: int | None = None) -> list[Example]:
  """Decoded examples of a TFDS split, in split order."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  if max_examples:
    ds = ds.take(int(max_examples))
  return [Example(ex["image"][..., 0], ex["formula"].decode(), ex["image_name"].decode())
          for ex in ds.as_numpy_iterator()]


def vocab_coverage(train_formulas: Sequence[str], eval_formulas: Sequence[str],
                   min_count: int = 2) -> dict[str, float]:
  """How much of the data a vocabulary of tokens seen >= min_count times covers."""
  from im2latex_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocab = vocab_lib.Vocab.build(train_formulas, min_count=min_count)

  def cover(formulas):
    ids = [vocab.encode(f) for f in formulas]
    toks = sum(len(x) for x in ids)
    unk = sum(i == vocab_lib.UNK for x in ids for i in x)
    return 1 - unk / max(toks, 1), float(np.mean([vocab_lib.UNK not in x for x in ids]))

  distinct = len({t for f in train_formulas for t in f.split()})
  train_tok, train_form = cover(train_formulas)
  eval_tok, eval_form = cover(eval_formulas)
  return {"distinct_train_tokens": distinct, "vocab_size": len(vocab),
          "train_token_coverage": train_tok, "train_formulas_without_unk": train_form,
          "eval_token_coverage": eval_tok, "eval_formulas_without_unk": eval_form}


def train_batch_shapes(data, input_cfg: ml_collections.ConfigDict, steps: int,
                       seed: int = 0) -> collections.Counter:
  """Counter of (H, W, T) over the first `steps` batches of the train iterator."""
  it = data.train_iterator(global_batch_size=input_cfg.batch_size, seed=seed)
  shapes = collections.Counter()
  for _ in range(steps):
    b = next(it)
    shapes[b["image"].shape[1:3] + (b["tokens"].shape[1],)] += 1
  return shapes


# ------------------------------------------------------------- token classes
TOKEN_CLASSES = ("letter", "digit", "greek", "operator", "structure", "command",
                 "environment", "spacing", "other")
GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa "
    "lambda mu nu xi pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi "
    "psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega".split())
SPACING = frozenset(r"\, \; \: \! \quad \qquad ~ \ \hspace \vspace \hfill".split() + ["\\"])
# Braces, scripts and delimiter sizing: the tokens that build the formula's tree.
STRUCTURE = frozenset("{ } _ ^ \\{ \\}".split())
OPERATOR_COMMANDS = frozenset(
    r"times cdot pm mp div ast star circ bullet oplus otimes wedge vee cap cup "
    r"leq le geq ge neq ne equiv approx sim simeq cong propto ll gg in notin ni "
    r"subset subseteq supset supseteq to rightarrow leftarrow leftrightarrow "
    r"Rightarrow Leftarrow Leftrightarrow longrightarrow longleftarrow mapsto "
    r"sum prod int oint iint iiint partial nabla infty prime dagger langle rangle "
    r"vert Vert | mid parallel perp forall exists neg cdots ldots dots vdots ddots "
    r"lbrack rbrack lfloor rfloor lceil rceil hbar ell".split())


def token_class(token: str) -> str:
  """One of TOKEN_CLASSES for a formula token (im2markup's tokenization)."""
  if token in SPACING:
    return "spacing"
  if len(token) == 1:
    if token.isalpha():
      return "letter"
    if token.isdigit():
      return "digit"
    if token in "{}_^":
      return "structure"
    if token == "&":
      return "environment"
    return "operator"
  if token in STRUCTURE:
    return "structure"
  if token == "\\\\" or token.startswith(("\\begin", "\\end")):
    return "environment"
  if token.startswith(("\\left", "\\right", "\\big", "\\Big", "\\bigg", "\\Bigg")):
    return "structure"
  if re.fullmatch(r"\\[A-Za-z]+\*?", token):
    name = token[1:]
    if name in GREEK:
      return "greek"
    if name in OPERATOR_COMMANDS:
      return "operator"
    return "command"
  if token.startswith("\\"):
    return "operator"  # \| \{ \# and the like
  return "other"


# --------------------------------------------------------------- error analysis
@dataclasses.dataclass
class ExampleError:
  """Token-level comparison of one prediction with its reference."""
  image_name: str
  gold: str
  prediction: str
  gold_len: int
  pred_len: int
  edit_distance: int    # token Levenshtein distance
  normalized: float     # edit_distance / max(gold_len, pred_len), in [0, 1]
  # Per gold token class: [gold tokens, gold tokens deleted or substituted].
  class_counts: dict[str, list[int]]
  inserted: dict[str, int]  # per predicted token class: tokens inserted


def compare(gold: str, prediction: str, image_name: str = "") -> ExampleError:
  g, p = gold.split(), prediction.split()
  ops = Levenshtein.editops(g, p)
  counts = {c: [0, 0] for c in TOKEN_CLASSES}
  for tok in g:
    counts[token_class(tok)][0] += 1
  inserted = {c: 0 for c in TOKEN_CLASSES}
  for op in ops:
    if op.tag in ("replace", "delete"):
      counts[token_class(g[op.src_pos])][1] += 1
    else:
      inserted[token_class(p[op.dest_pos])] += 1
  dist = len(ops)
  return ExampleError(image_name, gold, prediction, len(g), len(p), dist,
                      dist / max(len(g), len(p), 1), counts, inserted)


def example_errors(predictions: Iterable[Any]) -> list[ExampleError]:
  """One ExampleError per evaluators.DecodedExample (or (name, gold, pred) tuple)."""
  return [compare(p[1], p[2], p[0]) for p in predictions]


def errors_by_length(errors: Sequence[ExampleError],
                     edges: Sequence[int] = (10, 20, 30, 40)) -> list[dict[str, Any]]:
  """Rows per gold-length bucket: examples, mean normalized distance, exact match,
  corpus edit accuracy (im2markup's Σ lev / Σ max len)."""
  bounds = [0, *edges, 1 << 30]
  rows = []
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    part = [e for e in errors if lo < e.gold_len <= hi or (lo == 0 and e.gold_len == 0)]
    if not part:
      continue
    label = f"{lo + 1}-{hi}" if hi < 1 << 30 else f">{lo}"
    denom = sum(max(e.gold_len, e.pred_len) for e in part)
    rows.append({"gold tokens": label, "examples": len(part),
                 "mean normalized distance": float(np.mean([e.normalized for e in part])),
                 "exact match": float(np.mean([e.edit_distance == 0 for e in part])),
                 "edit accuracy": 1 - sum(e.edit_distance for e in part) / max(denom, 1)})
  return rows


def errors_by_token_class(errors: Sequence[ExampleError]) -> list[dict[str, Any]]:
  """Rows per token class: gold tokens, share missed (deleted or substituted),
  spurious insertions of that class per gold token of it."""
  rows = []
  for c in TOKEN_CLASSES:
    n = sum(e.class_counts[c][0] for e in errors)
    missed = sum(e.class_counts[c][1] for e in errors)
    ins = sum(e.inserted[c] for e in errors)
    if n or ins:
      rows.append({"class": c, "gold tokens": n, "missed": missed,
                   "miss rate": missed / n if n else float("nan"),
                   "inserted": ins})
  return rows


def top_substitutions(errors: Sequence[ExampleError], n: int = 15) -> list[dict[str, Any]]:
  """The most frequent (gold token -> predicted token) substitutions."""
  counts = collections.Counter()
  for e in errors:
    g, p = e.gold.split(), e.prediction.split()
    for op in Levenshtein.editops(g, p):
      if op.tag == "replace":
        counts[(g[op.src_pos], p[op.dest_pos])] += 1
  return [{"gold": g, "predicted": p, "count": c} for (g, p), c in counts.most_common(n)]


def token_balance(golds: Sequence[str], *runs: Sequence[str]) -> list[dict[str, Any]]:
  """Per token: its count in the references and, for each run of predictions
  (same order as `golds`), how many more or fewer times the run wrote it
  (`run i - gold`; corpus totals, so an omission and a spurious insertion
  elsewhere cancel). Sorted by how much the runs disagree (the largest
  |last run's shift - first run's| first, then by the first's |shift|):
  with two runs, the tokens that a change of model gained or lost."""
  gold = collections.Counter(t for g in golds for t in g.split())
  counts = [collections.Counter(t for p in run for t in p.split()) for run in runs]
  rows = []
  for tok in set(gold).union(*counts):
    shifts = [c[tok] - gold[tok] for c in counts]
    rows.append({"token": tok, "gold": gold[tok],
                 **{f"shift {i}": s for i, s in enumerate(shifts)}})
  key = lambda r: (-abs(r[f"shift {len(runs) - 1}"] - r["shift 0"]), -abs(r["shift 0"]),
                   r["token"])
  return sorted(rows, key=key)


def markdown_table(rows: Sequence[dict[str, Any]], floatfmt: str = ".3f") -> str:
  """A list of same-keyed dicts as a markdown table (for IPython.display.Markdown)."""
  if not rows:
    return "(no rows)"
  keys = list(rows[0])

  def fmt(v):
    if isinstance(v, float):
      return format(v, floatfmt)
    return str(v).replace("|", "\\|")
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
  return "\n".join(lines)


# ------------------------------------------------------------------ attention
def attention_centroids(attention: np.ndarray) -> np.ndarray:
  """[T, 2] expected (row, column) in pixels of each [H, W] attention map."""
  att = np.asarray(attention, np.float64)
  t, h, w = att.shape
  mass = np.maximum(att.sum(axis=(1, 2)), 1e-12)
  rows = (att.sum(axis=2) * np.arange(h)).sum(axis=1) / mass
  cols = (att.sum(axis=1) * np.arange(w)).sum(axis=1) / mass
  return np.stack([rows, cols], axis=1)


def attention_overlay(attention: np.ndarray, color=(1.0, 0.1, 0.0),
                      max_alpha: float = 0.75) -> np.ndarray:
  """float32 [H, W, 4] RGBA: `color`, opaque where [H, W] `attention` peaks.

  Unattended pixels stay transparent, so the formula under the overlay keeps
  its white background.
  """
  a = np.asarray(attention, np.float32)
  rgba = np.zeros(a.shape + (4,), np.float32)
  rgba[..., :3] = color
  rgba[..., 3] = max_alpha * a / max(float(a.max()), 1e-12)
  return rgba


# ------------------------------------------------------------------ plotting
def plot_attention_grid(prediction, max_tokens: int = 24, cols: int = 4,
                        panel_width: float = 3.0):
  """One panel per predicted token: the image with the token's attention on it.

  Args:
    prediction: a predictor.Prediction (image [H, W], tokens, token_probs,
      attention [T, H, W]).
    max_tokens: panels shown (the first tokens).
    cols: panels per row.
    panel_width: inches.

  Returns:
    The matplotlib Figure.
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = min(len(prediction.tokens), max_tokens)
  rows = max(-(-n // cols), 1)
  h, w = prediction.image.shape
  fig, axes = plt.subplots(rows, cols, squeeze=False,
                           figsize=(cols * panel_width, rows * panel_width * h / w + 0.4 * rows))
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i >= n:
      continue
    ax.imshow(prediction.image, cmap="gray", vmin=0, vmax=255)
    ax.imshow(attention_overlay(prediction.attention[i]))
    ax.set_title(f"{prediction.tokens[i]}  p={prediction.token_probs[i]:.2f}", fontsize=9)
  fig.tight_layout()
  return fig


def plot_examples(images: Sequence[np.ndarray], titles: Sequence[str],
                  captions: Sequence[str], width: float = 10.0, wrap: int = 110):
  """A column of images, each with a title and a (wrapped) text caption."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import textwrap  # pylint: disable=g-import-not-at-top
  n = len(images)
  fig, axes = plt.subplots(n, 1, squeeze=False, figsize=(width, 1.9 * n))
  for ax, im, title, cap in zip(axes[:, 0], images, titles, captions):
    ax.imshow(im, cmap="gray", vmin=0, vmax=255, aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9, loc="left")
    lines = [textwrap.fill(line, wrap) for line in cap.split("\n")]
    ax.set_xlabel("\n".join(lines), fontsize=8, family="monospace", loc="left")
  fig.tight_layout()
  return fig
