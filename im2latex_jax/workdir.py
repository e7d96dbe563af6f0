"""The files of a training workdir, read and written here only.

  config.json          the run's config (written at start, read by predict/evaluate)
  vocab.txt            the vocabulary (data/vocab.py's format); never rewritten
  metrics.jsonl        one JSON line per log/eval step (writers.MetricWriter)
  final_metrics.json   the last metrics of a finished run
  checkpoints/         Orbax checkpoints (checkpointing.py)
  eval/<split>_beam<K>/  `im2latex-jax evaluate` output (evaluate.py)

An `export-model` directory holds config.json, vocab.txt and params.msgpack.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from im2latex_jax.data import vocab as vocab_lib

CONFIG = "config.json"
METRICS = "metrics.jsonl"
FINAL_METRICS = "final_metrics.json"
VOCAB = vocab_lib.VOCAB_FILENAME


class WorkdirError(ValueError):
  """A workdir that has no usable model."""


def save_run_files(workdir: str, config: ml_collections.ConfigDict, vocab) -> None:
  """config.json and vocab.txt beside the checkpoints (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  vocab_path = os.path.join(workdir, VOCAB)
  if not os.path.exists(vocab_path):
    vocab.save(vocab_path)
  write_config(workdir, config)


def write_config(directory: str, config: ml_collections.ConfigDict) -> None:
  with open(os.path.join(directory, CONFIG), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    raise WorkdirError(
        f"{workdir} has no {CONFIG}: it is not the workdir of a training run. "
        "Train one with `im2latex-jax train --config configs/quickstart.py --workdir W`.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_vocab(workdir: str) -> vocab_lib.Vocab | None:
  path = os.path.join(workdir, VOCAB)
  return vocab_lib.Vocab.load(path) if os.path.exists(path) else None


def write_final_metrics(workdir: str, final: dict) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, FINAL_METRICS), "w") as f:
      json.dump({k: float(v) for k, v in final.items()}, f, indent=2)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS)


def read_metrics(workdir_or_path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """metrics.jsonl as {name: (steps [n], values [n])}, sorted by step.

  A resumed run may log a step twice; the last value written wins.
  """
  path = workdir_or_path
  if os.path.isdir(path):
    path = metrics_path(path)
  series: dict[str, dict[int, float]] = collections.defaultdict(dict)
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      row = json.loads(line)
      step = int(row.pop("step"))
      for k, v in row.items():
        series[k][step] = float(v)
  out = {}
  for k, by_step in series.items():
    steps = np.array(sorted(by_step), np.int64)
    out[k] = (steps, np.array([by_step[s] for s in steps], np.float64))
  return out


class MetricTail:
  """Reads the new complete lines of a growing metrics.jsonl (a sweep
  worker watching its trial)."""

  def __init__(self, path: str):
    self.path, self.pos, self.buf = path, 0, ""

  def read(self) -> list[dict[str, Any]]:
    if not os.path.exists(self.path):
      return []
    with open(self.path, encoding="utf-8") as f:
      f.seek(self.pos)
      self.buf += f.read()
      self.pos = f.tell()
    *lines, self.buf = self.buf.split("\n")
    out = []
    for line in lines:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        pass
    return out
