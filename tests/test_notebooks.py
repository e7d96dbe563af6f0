"""notebooks/*.ipynb: in sync with scripts/make_notebooks.py, and run top to bottom.

Each notebook is executed in a fresh python3 kernel on the embedded data, with
$IM2LATEX_WORKDIR pointing at a tiny model trained here for a few steps, so
the whole file takes a few minutes on 2 CPU cores.
"""

import importlib.util
import pathlib
import time

import pytest

from conftest import REPO, tiny_config

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
# Seconds any one cell may take in the test (the decoding cells are the longest).
CELL_TIMEOUT = 240


def _make_notebooks():
  spec = importlib.util.spec_from_file_location(
      "make_notebooks", REPO / "scripts" / "make_notebooks.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_every_notebook_is_built_by_the_script():
  mod = _make_notebooks()
  assert sorted(mod.NOTEBOOKS) == NOTEBOOKS, (
      "notebooks/ and scripts/make_notebooks.py disagree; run "
      "`python scripts/make_notebooks.py --execute`.")
  for name, cells in mod.NOTEBOOKS.items():
    saved = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    assert [c.source for c in saved.cells] == [src for _, src in cells], (
        f"{name} differs from its cells in scripts/make_notebooks.py; regenerate it "
        "with `python scripts/make_notebooks.py --execute`.")


def test_token_classes():
  from im2latex_jax import analysis  # pylint: disable=g-import-not-at-top
  expect = {"x": "letter", "7": "digit", "\\alpha": "greek", "\\Omega": "greek",
            "=": "operator", "\\times": "operator", "(": "operator", "{": "structure",
            "^": "structure", "\\left(": "structure", "\\frac": "command",
            "\\mathrm": "command", "\\begin{array}": "environment", "&": "environment",
            "\\\\": "environment", "\\,": "spacing", "~": "spacing", "\\": "spacing"}
  assert {t: analysis.token_class(t) for t in expect} == expect
  assert set(map(analysis.token_class, expect)) <= set(analysis.TOKEN_CLASSES)


def test_error_analysis_counts():
  from im2latex_jax import analysis  # pylint: disable=g-import-not-at-top
  e = analysis.compare("\\frac { a } { 2 }", "\\frac { b } { 2 } +", "x.png")
  assert (e.gold_len, e.pred_len, e.edit_distance) == (7, 8, 2)
  assert e.normalized == pytest.approx(2 / 8)
  assert e.class_counts["letter"] == [1, 1]  # a -> b
  assert e.class_counts["structure"] == [4, 0]
  assert e.inserted["operator"] == 1  # the trailing +
  rows = analysis.errors_by_length([e, analysis.compare("a", "a")], edges=(5,))
  assert [(r["gold tokens"], r["examples"], r["exact match"]) for r in rows] == [
      ("1-5", 1, 1.0), (">5", 1, 0.0)]
  subs = analysis.top_substitutions([e])
  assert subs == [{"gold": "a", "predicted": "b", "count": 1}]


def test_token_balance_of_two_runs(tmp_path):
  from im2latex_jax import analysis  # pylint: disable=g-import-not-at-top
  golds = ["{ \\bf x } + y", "\\, a"]
  a = ["{ \\bf x } + y", "a"]   # drops one \,
  b = ["x + y", "\\, \\, a"]    # drops \bf and its braces, one \, too many
  rows = {r["token"]: r for r in analysis.token_balance(golds, a, b)}
  assert rows["\\bf"] == {"token": "\\bf", "gold": 1, "shift 0": 0, "shift 1": -1}
  assert rows["{"]["shift 1"] == -1 and rows["}"]["shift 1"] == -1
  assert rows["\\,"] == {"token": "\\,", "gold": 1, "shift 0": -1, "shift 1": 1}
  assert rows["x"] == {"token": "x", "gold": 1, "shift 0": 0, "shift 1": 0}
  # \, moved most between the runs (2), then \bf, {, } (1 each, by name), x last.
  order = [r["token"] for r in analysis.token_balance(golds, a, b)]
  assert order[0] == "\\," and order[1:4] == ["\\bf", "{", "}"]
  # evaluate's predictions.tsv read back as written (tabs in a field become spaces).
  from im2latex_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from im2latex_jax.evaluation.evaluators import DecodedExample  # pylint: disable=g-import-not-at-top
  p = tmp_path / "predictions.tsv"
  evaluate.write_predictions(str(p), [DecodedExample("x.png", "a b", "a\tc", -1.5)])
  assert evaluate.read_predictions(str(p)) == {"x.png": ("a b", "a c", -1.5)}
  p.write_text("name\tref\n")
  with pytest.raises(ValueError, match="not a predictions.tsv"):
    evaluate.read_predictions(str(p))


def test_read_metrics_last_write_wins(tmp_path):
  from im2latex_jax import analysis  # pylint: disable=g-import-not-at-top
  (tmp_path / "metrics.jsonl").write_text(
      '{"step": 20, "train/loss": 3.0}\n{"step": 10, "train/loss": 4.0}\n'
      '{"step": 20, "train/loss": 2.5, "eval/loss": 2.9}\n')
  m = analysis.read_metrics(str(tmp_path))
  assert m["train/loss"][0].tolist() == [10, 20]
  assert m["train/loss"][1].tolist() == [4.0, 2.5]
  assert m["eval/loss"][0].tolist() == [20]


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory, tfds_dir):
  """A tiny quickstart model, trained 4 steps with one checkpoint."""
  from im2latex_jax import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("nb_model")
  c = tiny_config()
  c.input.data_dir = str(tfds_dir)
  # Few steps and a short eval split: few batch shapes, so few compilations.
  c.num_train_steps = 4
  c.eval_every_steps = 4
  c.log_every_steps = 2
  c.eval_max_examples = 16
  # A short max length keeps greedy decoding of an untrained model fast.
  c.evals.max_decode_len = 12
  train.train_and_evaluate(c, str(workdir))
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tiny_workdir, tfds_dir, tmp_path, monkeypatch):
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  before = {p: p.stat().st_mtime for p in pathlib.Path(tiny_workdir).rglob("*")}
  # The kernel inherits this environment: one CPU device (not conftest's 8
  # fake ones), the session's TFDS dir and compilation cache.
  monkeypatch.setenv("IM2LATEX_WORKDIR", str(tiny_workdir))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("MPLBACKEND", "agg")
  nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      cell.outputs = []
  t = time.time()
  NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "error"]
  assert not errors, errors
  images = sum("image/png" in o.get("data", {}) for c in nb.cells
               if c.cell_type == "code" for o in c.outputs)
  assert images >= 1, f"{name} drew no figure"
  after = {p: p.stat().st_mtime for p in pathlib.Path(tiny_workdir).rglob("*")}
  assert after == before, f"{name} wrote into the workdir: {set(after) ^ set(before)}"
  print(f"{name}: {time.time() - t:.0f}s")
