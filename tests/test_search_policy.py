"""benchmarks/search_policy.py: offline policies over recorded search readings."""

import json

from conftest import REPO
from im2latex_jax import defaults

policy = defaults.import_file(str(REPO / "benchmarks" / "search_policy.py"))

READINGS = [  # round 1: three candidates; round 2: two around the best
    {"round": 0, "scale": 0.8, "score": -0.30, "latex": "a"},
    {"round": 0, "scale": 1.0, "score": -0.04, "latex": "b"},
    {"round": 0, "scale": 1.2, "score": -0.50, "latex": "c"},
    {"round": 1, "scale": 0.9, "score": -0.01, "latex": "d"},
    {"round": 1, "scale": 1.1, "score": -0.20, "latex": "e"},
]


def test_choose():
  assert policy.choose(READINGS, "search") == (READINGS[3], 5)
  assert policy.choose(READINGS, "round1") == (READINGS[1], 3)
  assert policy.choose(READINGS, "center") == (READINGS[1], 1)
  assert policy.choose(READINGS, "early@-0.05") == (READINGS[1], 3)  # -0.04 >= -0.05: stop
  assert policy.choose(READINGS, "early@-0.02") == (READINGS[3], 5)  # not confident: go on
  assert policy.choose([], "search") == (None, 0)


def test_evaluate_counts_readings_and_refusals(tmp_path):
  (tmp_path / "predictions").mkdir()
  rows = [{"index": 0, "gold": "d", "readings": READINGS},
          {"index": 1, "gold": "x", "readings": []}]  # a refused image
  (tmp_path / "predictions" / "c1.readings.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  res = policy.evaluate(str(tmp_path), ["search", "center"])
  assert res["search"]["mean_readings"] == 2.5 and res["center"]["mean_readings"] == 0.5
  assert res["search"]["min_condition"] == "c1"


def test_no_old_estimate_policies():
  """Round 1 of four (three offsets + the old estimate): without the old one,
  round 2 counts only where round 1's best was an offset; else a lower bound."""
  old_best = {"round": 0, "scale": 1.0, "score": 0.0, "latex": "old"}
  offsets_best = {"round": 0, "scale": 1.0, "score": -0.9, "latex": "old"}
  kept = READINGS[:3] + [offsets_best] + READINGS[3:]
  assert policy.choose(kept, "no_old_r1") == (READINGS[1], 3)
  assert policy.choose(kept, "no_old") == (READINGS[3], 5)
  lost = READINGS[:3] + [old_best] + READINGS[3:]
  assert policy.choose(lost, "no_old") == (READINGS[1], -3)
