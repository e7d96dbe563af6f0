r"""What each glyph-size search policy would score, from one benchmark run.

`im2latex-jax robustness` writes every greedy reading the search made of each
image (OUT/predictions/<condition>.readings.jsonl: round, scale, mean token
log-probability, LaTeX). The readings of a cheaper policy are a subset of the
full search's, so its accuracy can be computed offline, without decoding
again; its cost is the number of readings it needs (each is one encoder +
greedy decode, the bulk of the latency).

  python benchmarks/search_policy.py results/robustness/readings_n40 [--out policy.json]

Policies: `search` (what predict does: every round, the most confident
reading), `round1` (the first round only), `center` (one reading at the
calibrated estimate), `no_old_r1` / `no_old` (round 1 without the
dataset-calibrated estimate; `no_old` then round 2 — exact where round 1's
best is among the offsets, else the offsets' best alone, so a lower bound),
and `early@T` (stop after round 1 when its best mean token log-probability
is at least T, else go on).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import sys

import numpy as np

from im2latex_jax.evaluation import metrics

EARLY_THRESHOLDS = (-0.01, -0.02, -0.05, -0.1, -0.2)


def _best(readings):
  return max(readings, key=lambda r: r["score"]) if readings else None


def choose(readings: list[dict], policy: str) -> tuple[dict | None, int]:
  """(the reading `policy` keeps, how many readings it needed)."""
  first = [r for r in readings if r["round"] == 0]
  if policy == "search":
    return _best(readings), len(readings)
  if policy == "round1":
    return _best(first), len(first)
  if policy == "center":
    # The calibrated estimate is round 1's middle candidate (offset 0).
    return (first[1] if len(first) > 1 else (first[0] if first else None)), min(len(first), 1)
  if policy in ("no_old_r1", "no_old"):
    # Round 1 without the dataset-calibrated estimate (its last candidate).
    offsets = first[:3]
    if policy == "no_old_r1":
      return _best(offsets), len(offsets)
    second = [r for r in readings if r["round"] > 0]
    if _best(offsets) is _best(first):  # round 2 was centred where it would be
      return _best(offsets + second), len(offsets) + len(second)
    # Round 2 would have been centred elsewhere and was not recorded: the
    # offsets' best alone, a lower bound on this policy (counted in `approx`).
    return _best(offsets), -len(offsets)
  if policy.startswith("early@"):
    threshold = float(policy.split("@", 1)[1])
    best = _best(first)
    if best is not None and best["score"] >= threshold:
      return best, len(first)
    return _best(readings), len(readings)
  raise ValueError(f"unknown policy {policy!r}")


def evaluate(run_dir: str, policies: list[str]) -> dict:
  files = sorted(glob.glob(os.path.join(run_dir, "predictions", "*.readings.jsonl")) +
                 glob.glob(os.path.join(run_dir, "predictions", "*.readings.jsonl.gz")))
  if not files:
    raise FileNotFoundError(f"{run_dir}/predictions has no *.readings.jsonl; rerun "
                            "`im2latex-jax robustness` with this version")
  out = {}
  for policy in policies:
    per_cond, all_refs, all_hyps, counts, approx = {}, [], [], [], 0
    for path in files:
      cond = os.path.basename(path).split(".readings")[0]
      refs, hyps = [], []
      opener = gzip.open if path.endswith(".gz") else open
      with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
          row = json.loads(line)
          pick, n = choose(row["readings"], policy)
          refs.append(row["gold"])
          hyps.append(None if pick is None else pick["latex"])
          counts.append(abs(n))
          approx += n < 0
      per_cond[cond] = metrics.text_metrics(refs, hyps)["bleu4"]
      all_refs += refs
      all_hyps += hyps
    overall = metrics.text_metrics(all_refs, all_hyps)["bleu4"]
    worst = min(per_cond, key=per_cond.get)
    out[policy] = {"overall_bleu4": overall, "min_condition": worst,
                   "min_condition_bleu4": per_cond[worst],
                   "mean_readings": float(np.mean(counts)), "per_condition": per_cond,
                   "approx": approx}
  return out


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("run_dir", help="an `im2latex-jax robustness --out` dir")
  p.add_argument("--out", default=None, help="also write the figures here (JSON)")
  args = p.parse_args(argv[1:])
  policies = (["search", "round1", "center", "no_old_r1", "no_old"] +
              [f"early@{t}" for t in EARLY_THRESHOLDS])
  try:
    res = evaluate(args.run_dir, policies)
  except FileNotFoundError as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  print("| policy | overall BLEU-4 | worst condition (BLEU-4) | clean | readings per image |")
  print("|---|---|---|---|---|")
  for name, r in res.items():
    note = f" (lower bound: {r['approx']} images approximated)" if r["approx"] else ""
    print(f"| {name} | {r['overall_bleu4']:.1f}{note} | {r['min_condition']} "
          f"({r['min_condition_bleu4']:.1f}) | {r['per_condition'].get('clean', float('nan')):.1f} "
          f"| {r['mean_readings']:.2f} |")
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(res, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
