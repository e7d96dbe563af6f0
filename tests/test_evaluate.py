"""Decoding evaluation: the training-time evaluator and `im2latex-jax evaluate`.

One tiny model is trained for 4 steps on the embedded data (with the decoding
evaluator on, so train.py's call into evaluators is exercised too); the
evaluator and the CLI are then checked against each other and against
metrics.py on the written predictions.
"""

import csv
import json
import math
import os
import shutil

import jax
import numpy as np
import pytest

from im2latex_jax.data import core
from im2latex_jax.evaluation import evaluate
from im2latex_jax.evaluation import evaluators
from im2latex_jax.infer import inference
from im2latex_jax.evaluation import metrics
# Imported before any test changes PATH: render.py copies os.environ for TeX at import.
from im2latex_jax.datagen import render  # pylint: disable=unused-import
from im2latex_jax import sharding
from im2latex_jax import train
from im2latex_jax.data import input_pipeline

from conftest import tiny_config

# Examples decoded during training and by the evaluator tests.
DECODE_N = 13


def _config(tfds_dir):
  c = tiny_config()
  c.input.data_dir = str(tfds_dir)
  # Two image shapes and one token length cover the embedded data: few compilations.
  c.input.buckets = "40x240,50x240"
  c.input.token_buckets = (40,)
  c.num_train_steps = 4
  c.eval_every_steps = 2
  c.log_every_steps = 2
  c.evals.decode_every_steps = 2
  c.evals.decode_max_examples = DECODE_N
  c.evals.max_decode_len = 12
  return c


@pytest.fixture(scope="module")
def workdir(tfds_dir, tmp_path_factory):
  """A workdir trained for 4 steps, with its final metrics."""
  w = str(tmp_path_factory.mktemp("evalrun") / "run")
  final = train.train_and_evaluate(_config(tfds_dir), w)
  return w, final


@pytest.fixture(scope="module")
def evaluator(workdir):
  """A DecodeEvaluator on the mesh, with the workdir's latest variables."""
  w, _ = workdir
  loaded = inference.load_model(w, "latest")
  mesh = sharding.make_mesh()
  cfg = loaded.config
  data = input_pipeline.get_data(cfg.input, vocab=loaded.vocab, need_train=False)
  # As train.py builds it: a decode function and the source's batches.
  decode_fn = inference.make_decode_fn(loaded.model, beam_size=1,
                                       max_len=cfg.evals.max_decode_len)
  ev = evaluators.DecodeEvaluator(
      decode_fn, loaded.vocab,
      lambda: data.eval_batches(cfg.input.eval_split,
                                global_batch_size=cfg.input.eval_batch_size,
                                with_strings=True, max_examples=DECODE_N),
      mesh, max_examples=DECODE_N)
  variables = jax.device_put(loaded.variables, sharding.replicated(mesh))
  return ev, variables


def _read_tsv(path):
  with open(path, encoding="utf-8") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  assert rows[0] == ["image", "gold", "prediction", "logprob"]
  return rows[1:]


def _run_cli(argv, capsys):
  rc = evaluate.main(["im2latex-jax evaluate"] + argv)
  out, err = capsys.readouterr()
  return rc, out, err


# ------------------------------------------------------------ evaluator ---
def test_training_logged_decode_metrics(workdir, evaluator):
  """What training logged at its last step is what the evaluator computes
  again from the saved model: the same BLEU-4, edit accuracy, exact match
  (metrics.text_metrics, checked by hand in test_metrics)."""
  _, final = workdir
  ev, variables = evaluator
  again = ev.run(variables)
  assert final["decode_examples"] == DECODE_N
  for key in ("bleu4", "edit_accuracy", "exact_match"):
    assert final[key] == pytest.approx(again[key], abs=1e-9), key


def test_evaluator_metrics_in_range_and_count(evaluator):
  ev, state = evaluator
  m = ev.run(state)
  assert {"bleu4", "edit_accuracy", "exact_match"} <= set(m)
  assert 0.0 <= m["bleu4"] <= 100.0
  assert 0.0 <= m["edit_accuracy"] <= 1.0
  assert 0.0 <= m["exact_match"] <= 1.0
  assert m["decode_examples"] == DECODE_N
  preds = ev.last_predictions
  assert len(preds) == DECODE_N
  assert len({p.image_name for p in preds}) == DECODE_N  # padding excluded, no repeats
  assert all(p.image_name for p in preds)
  # The metrics are metrics.py's on the returned strings.
  assert m == pytest.approx({**metrics.text_metrics([p.gold for p in preds],
                                                    [p.prediction for p in preds]),
                             "decode_examples": DECODE_N, "decode_seconds": m["decode_seconds"]})


def test_evaluator_bleu_by_hand():
  """Gold `a b c d e f`, prediction `a b c d e`: every n-gram precision is 1
  and the brevity penalty exp(1 - 6/5), so BLEU-4 = 100 e^-0.2 = 81.873. (With
  gold and prediction swapped it would be 100 (1/3)^(1/4) = 75.984.)"""
  preds = [evaluators.DecodedExample("x.png", "a b c d e f", "a b c d e", 0.0)]
  m = evaluators.text_metrics(preds)
  assert m["bleu4"] == pytest.approx(100 * math.exp(-0.2), abs=1e-3)
  assert m["exact_match"] == 0.0
  assert m["edit_accuracy"] == pytest.approx(1 - 1 / 6)


def test_evaluator_never_recompiles(evaluator):
  ev, state = evaluator
  shapes = {b["image"].shape for b in ev.batches_fn()}
  ev.run(state)
  after_first = ev.decode_fn._cache_size()  # pylint: disable=protected-access
  assert after_first == len(shapes), (after_first, shapes)
  # A second evaluation with new parameter arrays (as after training steps).
  new_state = {**state, "params": jax.tree.map(lambda x: x * 1.0, state["params"])}
  ev.run(new_state)
  ev.run(state)
  assert ev.decode_fn._cache_size() == after_first  # pylint: disable=protected-access


def test_limit_split():
  assert core.limit_split("validation", None) == ("validation", None)
  assert core.limit_split("validation", 5) == ("validation[:5]", None)
  assert core.limit_split("validation[7475:]", 200) == ("validation[7475:7675]", None)
  assert core.limit_split("validation[10:12]", 5) == ("validation[10:12]", None)
  assert core.limit_split("validation[:50%]", 5) == ("validation[:50%]", 5)


# ------------------------------------------------------------------ CLI ---
def test_cli_greedy_matches_evaluator_and_training(workdir, evaluator, capsys):
  w, final = workdir
  ev, state = evaluator
  rc, out, err = _run_cli(["--workdir", w, "--step", "latest",
                           "--max-examples", str(DECODE_N)], capsys)
  assert rc == 0, err
  lines = out.strip().splitlines()
  assert lines[0] == evaluate.TABLE_HEADER.splitlines()[0]
  assert lines[-1].startswith("| validation | 1 | ")
  d = os.path.join(w, "eval", "validation_beam1")
  rows = _read_tsv(os.path.join(d, "predictions.tsv"))
  assert len(rows) == DECODE_N
  m = json.load(open(os.path.join(d, "metrics.json")))
  assert m["examples"] == DECODE_N
  # Same predictions as the training-time evaluator (two paths, one decoder).
  ev.run(state)
  assert [(r[0], r[1], r[2]) for r in rows] == [
      (p.image_name, p.gold, p.prediction) for p in ev.last_predictions]
  np.testing.assert_allclose([float(r[3]) for r in rows],
                             [p.logprob for p in ev.last_predictions], rtol=1e-4, atol=1e-4)
  # Text metrics recomputed from the file by hand-free reference code.
  want = metrics.text_metrics([r[1] for r in rows], [r[2] for r in rows])
  for k, v in want.items():
    assert m[k] == pytest.approx(v)
  assert lines[-1] == evaluate.table_row("validation", 1, m)
  assert m["perplexity"] == pytest.approx(np.exp(m["loss"]), rel=1e-6)
  assert 0.0 <= m["token_accuracy"] <= 1.0
  assert m["images_per_sec"] > 0 and m["decode_seconds"] > 0


def test_cli_whole_split_loss_equals_training_eval(workdir, capsys):
  """Teacher-forced loss of the CLI == train.py's last evaluation (same step)."""
  w, final = workdir
  rc, _, err = _run_cli(["--workdir", w, "--step", "latest", "--max-len", "2"], capsys)
  assert rc == 0, err
  m = json.load(open(os.path.join(w, "eval", "validation_beam1", "metrics.json")))
  assert m["examples"] == final["examples"] == 120
  assert m["loss"] == pytest.approx(final["loss"], rel=1e-5)
  assert m["token_accuracy"] == pytest.approx(final["token_accuracy"], rel=1e-5)


def test_cli_beam2(workdir, capsys):
  w, _ = workdir
  rc, out, err = _run_cli(["--workdir", w, "--step", "latest", "--beam", "2",
                           "--max-examples", "6", "--split", "validation[20:]"], capsys)
  assert rc == 0, err
  assert out.strip().splitlines()[-1].startswith("| validation[20:] | 2 | ")
  d = os.path.join(w, "eval", "validation_20_beam2")
  rows = _read_tsv(os.path.join(d, "predictions.tsv"))
  assert len(rows) == 6
  # The slice was honoured: the examples are those of validation[20:26].
  data = input_pipeline.get_data(inference.load_config(w).input, need_train=False)
  want = data.builder.as_dataset(split="validation[20:26]").as_numpy_iterator()
  assert sorted(r[0] for r in rows) == sorted(ex["image_name"].decode() for ex in want)
  m = json.load(open(os.path.join(d, "metrics.json")))
  assert m["examples"] == 6 and m["beam"] == 2


def test_cli_eos_bias_keeps_every_formula_going(workdir, capsys):
  """A bias no EOS can beat: every prediction runs to --max-len (or to the
  loop guard), in its own output dir, and metrics.json records the bias."""
  w, _ = workdir
  rc, _, err = _run_cli(["--workdir", w, "--step", "latest", "--max-examples", "6",
                         "--max-len", "7", "--eos-bias", "-1000"], capsys)
  assert rc == 0, err
  d = os.path.join(w, "eval", "validation_beam1_eos-1000")
  rows = _read_tsv(os.path.join(d, "predictions.tsv"))
  assert len(rows) == 6 and all(len(r[2].split()) == 7 for r in rows), rows
  assert json.load(open(os.path.join(d, "metrics.json")))["eos_bias"] == -1000


def _no_checkpoint_workdir(w, tmp_path):
  d = tmp_path / "fresh"
  d.mkdir()
  for f in ("config.json", "vocab.txt"):
    shutil.copy(os.path.join(w, f), d / f)
  return str(d)


@pytest.mark.parametrize("case, message", [
    ("no_checkpoint", "has no checkpoint yet"),
    ("missing_dir", "does not exist"),
    ("split", "Split 'test' is not in this dataset"),
    ("beam", "--beam 0 must be at least 1"),
    ("step", "--step 'first': use 'best', 'latest' or a step number"),
    ("step_missing", "No checkpoint at step 3"),
    ("eos_beam", "--eos-bias -1 is for greedy decoding (--beam 1)"),
])
def test_cli_bad_input(case, message, workdir, tmp_path, capsys):
  w, _ = workdir
  argv = {
      "no_checkpoint": ["--workdir", _no_checkpoint_workdir(w, tmp_path)],
      "missing_dir": ["--workdir", str(tmp_path / "nope")],
      "split": ["--workdir", w, "--split", "test"],
      "beam": ["--workdir", w, "--beam", "0"],
      "step": ["--workdir", w, "--step", "first"],
      "step_missing": ["--workdir", w, "--step", "3"],
      "eos_beam": ["--workdir", w, "--beam", "2", "--eos-bias", "-1"],
  }[case]
  rc, out, err = _run_cli(argv, capsys)
  assert rc == 2
  assert out == ""
  assert err.count("\n") == 1 and err.startswith("error: "), err
  assert message in err
  assert "Traceback" not in err


def test_cli_image_metrics_without_tex(workdir, tmp_path, monkeypatch, capsys):
  w, _ = workdir
  monkeypatch.setenv("PATH", str(tmp_path))  # no pdflatex, no pdftoppm
  rc, out, err = _run_cli(["--workdir", w, "--image-metrics"], capsys)
  assert rc == 2 and out == ""
  assert err.startswith("error: --image-metrics: ") and err.count("\n") == 1
  assert "apt-get install texlive-latex-base" in err


@pytest.mark.tex
@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("pdftoppm") is None,
                    reason="needs pdflatex and pdftoppm")
def test_cli_image_metrics(workdir, capsys):
  w, _ = workdir
  rc, out, err = _run_cli(["--workdir", w, "--step", "latest", "--max-examples", "4",
                           "--image-metrics"], capsys)
  assert rc == 0, err
  m = json.load(open(os.path.join(w, "eval", "validation_beam1", "metrics.json")))
  for k in ("image_exact_match", "image_exact_match_ws", "image_edit_accuracy"):
    assert 0.0 <= m[k] <= 1.0
  assert 1 <= m["image_num_evaluated"] <= 4
  row = out.strip().splitlines()[-1]
  assert row == evaluate.table_row("validation", 1, m) and "–" not in row
