"""Builds notebooks/*.ipynb from the cell lists below, and executes them.

  python scripts/make_notebooks.py                # write the notebooks, no outputs
  IM2LATEX_WORKDIR=workdirs/quickstart \\
    python scripts/make_notebooks.py --execute    # write, run top to bottom, keep outputs
  python scripts/make_notebooks.py --execute --only 03

The cells live here so that a change to a notebook is a reviewable diff of
Python source; the .ipynb files are regenerated from them (tests/
test_notebooks.py checks they agree). The notebooks hold no logic of their
own: they call im2latex_jax (analysis.py for the plots and error analysis).

Which model the notebooks look at: $IM2LATEX_WORKDIR; unset, the shipped
model (im2latex_jax/assets/model) if there is one, else a quickstart model
trained for 60 steps into a temporary directory (analysis.resolve_workdir).
They never write into the workdir.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import nbformat
from nbformat import v4

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
# Seconds any one cell may run (the fallback training cell is the longest).
CELL_TIMEOUT = 900

SETUP = """\
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TQDM_DISABLE", "1")  # no TFDS progress bars in the outputs
import collections

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from im2latex_jax import analysis
%matplotlib inline
# Small figures keep the saved notebooks small.
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})"""

WORKDIR_CELL = """\
# $IM2LATEX_WORKDIR, else the shipped model, else a 60-step quickstart run in a temp dir.
WORKDIR = os.environ.get("IM2LATEX_WORKDIR") or analysis.resolve_workdir({args})
print("workdir:", WORKDIR)"""

# ------------------------------------------------------------------ 01
DATA_EXPLORATION = [
    ("md", """\
# 01 · The embedded dataset

The 720 training and 120 validation formulas shipped in the package
(`im2latex_jax/data/embedded`), read through the TFDS builder and the tf.data
input pipeline exactly as training reads them (quickstart's input config):
image buckets, formula lengths, token frequencies, and the batch shapes that
reach the compiled train step."""),
    ("code", SETUP),
    ("code", """\
from im2latex_jax.data import input_pipeline

cfg = analysis.embedded_input_config()   # configs/quickstart.py's config.input
data = input_pipeline.get_data(cfg)
train = analysis.load_examples(data.builder, "train")
val = analysis.load_examples(data.builder, "validation")
print(f"{len(train)} train, {len(val)} validation examples; vocabulary {len(data.vocab)} "
      f"(min_count {cfg.vocab_min_count}); token buckets {cfg.token_buckets}")"""),
    ("md", """\
## Image shapes
im2markup's processed images are already padded to one of its (H, W) buckets,
so every image shape is a bucket."""),
    ("code", """\
shapes = collections.Counter(e.image.shape for e in train)
val_shapes = collections.Counter(e.image.shape for e in val)
order = sorted(set(shapes) | set(val_shapes), key=lambda s: (s[0] * s[1], s))
x = np.arange(len(order))
fig, ax = plt.subplots(figsize=(9, 3))
ax.bar(x - 0.2, [shapes[s] for s in order], 0.4, label="train")
ax.bar(x + 0.2, [val_shapes[s] for s in order], 0.4, label="validation")
ax.set_xticks(x, [f"{h}x{w}" for h, w in order], rotation=45)
ax.set_ylabel("images"); ax.set_title("Image buckets (H x W), by area"); ax.legend()
plt.show()
print("train keys (HxW/T: count):", input_pipeline.describe_counts(data.keys, data.train_counts))
print("examples outside the buckets/filter:", int(data.train_counts[-1]))"""),
    ("md", "## Formula lengths (tokens)"),
    ("code", """\
train_len = np.array([len(e.formula.split()) for e in train])
val_len = np.array([len(e.formula.split()) for e in val])
fig, ax = plt.subplots(figsize=(7, 3))
bins = np.arange(0, max(train_len.max(), val_len.max()) + 5, 4)
ax.hist(train_len, bins, alpha=0.7, label="train")
ax.hist(val_len, bins, alpha=0.7, label="validation")
for t in cfg.token_buckets:
  ax.axvline(t, color="k", ls="--", lw=1)
ax.set_xlabel("tokens per formula (dashed: token buckets)"); ax.set_ylabel("formulas"); ax.legend()
plt.show()
print("train length: median %d, 90%% %d, max %d" % (np.median(train_len),
      np.percentile(train_len, 90), train_len.max()))"""),
    ("md", "## Token frequencies and vocabulary coverage"),
    ("code", """\
counts = collections.Counter(t for e in train for t in e.formula.split())
top = counts.most_common(40)
fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(range(len(top)), [c for _, c in top])
ax.set_xticks(range(len(top)), [t for t, _ in top], rotation=90, family="monospace")
ax.set_yscale("log"); ax.set_ylabel("count"); ax.set_title("40 most frequent training tokens")
plt.show()

by_class = collections.Counter()
for tok, c in counts.items():
  by_class[analysis.token_class(tok)] += c
total = sum(by_class.values())
display(Markdown(analysis.markdown_table(
    [{"class": k, "tokens": by_class[k], "share": by_class[k] / total,
      "distinct": sum(analysis.token_class(t) == k for t in counts)}
     for k in analysis.TOKEN_CLASSES if by_class[k]])))"""),
    ("code", """\
cov = analysis.vocab_coverage([e.formula for e in train], [e.formula for e in val],
                              min_count=cfg.vocab_min_count)
display(Markdown(analysis.markdown_table([cov])))
singletons = sorted(t for t, c in counts.items() if c == 1)
print(f"{len(singletons)} tokens seen once (mapped to <unk>):", " ".join(singletons[:40]), "...")"""),
    ("md", "## Sample images"),
    ("code", """\
sample = train[:6]
analysis.plot_examples([e.image for e in sample],
                       [f"{e.image_name}  {e.image.shape[0]}x{e.image.shape[1]}" for e in sample],
                       [e.formula for e in sample], width=8)
plt.show()"""),
    ("md", """\
## Batch shapes of one epoch
Each batch holds one (image bucket, token bucket) key, so the train step is
compiled once per key the epoch draws; evaluation walks every key that has
examples and pads its last batch."""),
    ("code", """\
steps_per_epoch = data.num_train // cfg.batch_size
train_shapes = analysis.train_batch_shapes(data, cfg, steps_per_epoch)
print(f"train: {steps_per_epoch} steps of batch {cfg.batch_size} -> "
      f"{len(train_shapes)} distinct (H, W, T) shapes")
for shape, n in sorted(train_shapes.items()):
  print(f"  {shape}: {n} batches")
ds, n_eval, n_batches = input_pipeline.create_eval_dataset(
    data, cfg, "validation", global_batch_size=cfg.eval_batch_size)
eval_shapes = collections.Counter(b["image"].shape[1:3] + (b["tokens"].shape[1],)
                                  for b in ds.as_numpy_iterator())
print(f"validation: {n_eval} examples in {n_batches} batches of {cfg.eval_batch_size}, "
      f"{len(eval_shapes)} distinct shapes: {dict(eval_shapes)}")"""),
]

# ------------------------------------------------------------------ 02
TRAINING_CURVES = [
    ("md", """\
# 02 · Training curves

Everything the trainer logged to `<workdir>/metrics.jsonl`: `train/*` every
`log_every_steps`, `eval/*` every `eval_every_steps`. Set `IM2LATEX_WORKDIR`
to look at another run."""),
    ("code", SETUP),
    ("code", WORKDIR_CELL.format(args="need_metrics=True")),
    ("code", """\
curves = analysis.read_metrics(WORKDIR)
print("logged series:", ", ".join(sorted(curves)))
final_path = os.path.join(WORKDIR, "final_metrics.json")
if os.path.exists(final_path):
  import json
  with open(final_path) as f:
    final = json.load(f)
  display(Markdown(analysis.markdown_table(
      [{"final metric": k, "value": final[k]} for k in sorted(final)], ".4g")))"""),
    ("code", """\
def plot(ax, names, title, log=False, transform=None, label=None):
  for name in names:
    if name in curves:
      steps, values = curves[name]
      ax.plot(steps, transform(values) if transform else values,
              "o-" if len(steps) < 15 else "-", ms=3, label=label or name)
  ax.set_title(title); ax.set_xlabel("step")
  if log:
    ax.set_yscale("log")
  if ax.lines:
    ax.legend(fontsize=7)

fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
plot(axes[0, 0], ["train/loss", "eval/loss"], "cross-entropy (nats/token)")
plot(axes[0, 1], ["train/loss"], "perplexity", log=True, transform=np.exp, label="exp(train/loss)")
plot(axes[0, 1], ["eval/perplexity"], "perplexity", log=True)
plot(axes[0, 2], ["train/token_accuracy", "eval/token_accuracy"], "token accuracy (teacher forced)")
plot(axes[1, 0], ["train/lr"], "learning rate (incl. plateau scale)", log=True)
plot(axes[1, 1], ["train/steps_per_sec"], "steps / s")
plot(axes[1, 2], ["train/grad_norm"], "gradient norm")
fig.tight_layout()
plt.show()"""),
    ("md", "Decoding metrics (only when the run had `config.evals.decode_every_steps > 0`) and parameter norm:"),
    ("code", """\
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
if "eval/bleu4" in curves:
  plot(axes[0], ["eval/edit_accuracy", "eval/exact_match"], "greedy decoding (0..1)")
  plot(axes[0], ["eval/bleu4"], "greedy decoding", transform=lambda v: v / 100,
       label="eval/bleu4 / 100")
else:
  axes[0].text(0.5, 0.5, "no decoding evals in this run", ha="center", va="center")
  axes[0].axis("off")
plot(axes[1], ["train/param_norm"], "parameter norm")
fig.tight_layout()
plt.show()"""),
]

# ------------------------------------------------------------------ 03
ATTENTION_MAPS = [
    ("md", """\
# 03 · Attention maps

Where the decoder looks for each token it writes. `predictor.load_predictor`
loads the best checkpoint of the workdir; its greedy decoding records each
token's attention over the encoder grid, spread back onto the image pixels
(`predictor.attention_to_image`). One panel per predicted token, with the
probability the model gave it."""),
    ("code", SETUP),
    ("code", WORKDIR_CELL.format(args="")),
    ("code", """\
from im2latex_jax.infer import predictor as predictor_lib
from im2latex_jax.data import input_pipeline

predictor = predictor_lib.load_predictor(WORKDIR)
print("model:", predictor.model_id)
cfg = analysis.embedded_input_config(predictor.config.input)
data = input_pipeline.get_data(cfg, vocab=predictor.vocab, need_train=False)
val = analysis.load_examples(data.builder, "validation")
# A few short formulas, so each grid stays readable.
examples = [e for e in val if 6 <= len(e.formula.split()) <= 16][:3]
predictions = predictor.predict([e.image for e in examples])"""),
    ("code", """\
for ex, p in zip(examples, predictions):
  display(Markdown(f"**{ex.image_name}**  \\ngold: `{ex.formula}`  \\n"
                   f"pred: `{p.latex}`  (log p = {p.logprob:.2f})"))
  analysis.plot_attention_grid(p, max_tokens=12, cols=4, panel_width=2.2)
  plt.show()"""),
    ("md", """\
## Reading order
The attention centroid of each token: a model that reads left to right moves
its column steadily right, jumping back at scripts and fractions."""),
    ("code", """\
fig, axes = plt.subplots(1, len(predictions), figsize=(4 * len(predictions), 3), squeeze=False)
for ax, ex, p in zip(axes[0], examples, predictions):
  c = analysis.attention_centroids(p.attention)
  ax.set_title(ex.image_name)
  ax.plot(c[:, 1], "o-", ms=3, label="column")
  ax.plot(c[:, 0], "s-", ms=3, label="row")
  ax.set_xticks(range(len(p.tokens)), p.tokens, rotation=90, family="monospace", fontsize=7)
  ax.set_ylabel("pixels"); ax.legend(fontsize=7)
fig.tight_layout()
plt.show()"""),
]

# ------------------------------------------------------------------ 04
ERROR_ANALYSIS = [
    ("md", """\
# 04 · Error analysis

Greedy decoding of the whole embedded validation split with
`evaluators.decode_split` (the code behind `im2latex-jax evaluate` and the
training-time decode eval), then token-level edit distance per example,
grouped by formula length and by token class."""),
    ("code", SETUP),
    ("code", WORKDIR_CELL.format(args="")),
    ("code", """\
from im2latex_jax.evaluation import evaluators
from im2latex_jax.infer import inference
from im2latex_jax.data import input_pipeline

lm = inference.load_model(WORKDIR)
cfg = analysis.embedded_input_config(lm.config.input)
data = input_pipeline.get_data(cfg, vocab=lm.vocab, need_train=False)
ds, n, _ = input_pipeline.create_eval_dataset(
    data, cfg, "validation", global_batch_size=cfg.eval_batch_size, keep_strings=True)
decode_fn = inference.make_decode_fn(lm.model, beam_size=1,
                                     max_len=int(lm.config.evals.max_decode_len))
predictions = evaluators.decode_split(decode_fn, lm.variables, lm.vocab, ds.as_numpy_iterator())
print(f"model {lm.model_id}: decoded {len(predictions)} of {n} validation examples")
display(Markdown(analysis.markdown_table([evaluators.text_metrics(predictions)])))"""),
    ("code", """\
errors = analysis.example_errors(predictions)
norm = np.array([e.normalized for e in errors])
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].hist(norm, bins=np.linspace(0, 1, 21))
axes[0].set_xlabel("edit distance / max(len gold, len pred)"); axes[0].set_ylabel("examples")
axes[1].scatter([e.gold_len for e in errors], [e.pred_len for e in errors], s=8, alpha=0.6)
lim = max(max(e.gold_len for e in errors), max(e.pred_len for e in errors)) + 2
axes[1].plot([0, lim], [0, lim], "k--", lw=1)
axes[1].set_xlabel("gold tokens"); axes[1].set_ylabel("predicted tokens")
fig.tight_layout()
plt.show()"""),
    ("md", "## By formula length"),
    ("code", """\
by_len = analysis.errors_by_length(errors, edges=(10, 20, 30, 40))
display(Markdown(analysis.markdown_table(by_len)))
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.bar([r["gold tokens"] for r in by_len], [r["edit accuracy"] for r in by_len])
ax.set_xlabel("gold formula length (tokens)"); ax.set_ylabel("edit accuracy"); ax.set_ylim(0, 1)
plt.show()"""),
    ("md", """\
## By token class
*missed*: gold tokens of the class that the alignment deletes or substitutes;
*inserted*: predicted tokens of the class with no gold counterpart."""),
    ("code", """\
by_class = analysis.errors_by_token_class(errors)
display(Markdown(analysis.markdown_table(by_class)))
rows = [r for r in by_class if r["gold tokens"]]
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.bar([r["class"] for r in rows], [r["miss rate"] for r in rows])
ax.set_ylabel("share of gold tokens missed"); ax.set_ylim(0, 1)
plt.xticks(rotation=30)
plt.show()
display(Markdown("Most frequent substitutions:\\n\\n" +
                 analysis.markdown_table(analysis.top_substitutions(errors, 12))))"""),
    ("md", "## Worst examples"),
    ("code", """\
images = {e.image_name: e.image for e in analysis.load_examples(data.builder, "validation")}
worst = sorted(errors, key=lambda e: (-e.normalized, -e.edit_distance))[:5]
analysis.plot_examples(
    [images[e.image_name] for e in worst],
    [f"{e.image_name}: {e.edit_distance} edits, normalized {e.normalized:.2f}" for e in worst],
    [f"gold: {e.gold}\\npred: {e.prediction}" for e in worst], width=8, wrap=95)
plt.show()"""),
]

NOTEBOOKS = {
    "01_data_exploration.ipynb": DATA_EXPLORATION,
    "02_training_curves.ipynb": TRAINING_CURVES,
    "03_attention_maps.ipynb": ATTENTION_MAPS,
    "04_error_analysis.ipynb": ERROR_ANALYSIS,
}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
  nb = v4.new_notebook()
  nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"},
                 "language_info": {"name": "python"}}
  for kind, source in cells:
    nb.cells.append(v4.new_markdown_cell(source) if kind == "md" else v4.new_code_cell(source))
  # Stable cell ids, so regenerating gives the same file.
  for i, cell in enumerate(nb.cells):
    cell["id"] = f"cell-{i:02d}"
  return nb


def execute(nb: nbformat.NotebookNode, timeout: int = CELL_TIMEOUT,
            cwd: str = NOTEBOOK_DIR) -> nbformat.NotebookNode:
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  NotebookClient(nb, timeout=timeout, kernel_name="python3",
                 resources={"metadata": {"path": cwd}}).execute()
  for cell in nb.cells:
    # Wall-clock stamps would make every re-run a diff; stderr holds only
    # TensorFlow/absl start-up logs (errors are kept as error outputs).
    cell.get("metadata", {}).pop("execution", None)
    if cell.cell_type == "code":
      cell.outputs = [o for o in cell.outputs
                      if not (o.output_type == "stream" and o.name == "stderr")]
  return nb


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--execute", action="store_true", help="run each notebook and keep outputs")
  p.add_argument("--only", nargs="*", default=None, help="name prefixes, e.g. 01 03")
  p.add_argument("--out", default=NOTEBOOK_DIR)
  p.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  for name, cells in NOTEBOOKS.items():
    if args.only and not any(name.startswith(o) for o in args.only):
      continue
    nb = build(cells)
    if args.execute:
      t = time.time()
      nb = execute(nb, args.timeout)
      print(f"{name}: executed in {time.time() - t:.0f}s", flush=True)
    path = os.path.join(args.out, name)
    nbformat.write(nb, path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} KB)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
