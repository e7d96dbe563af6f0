"""Metric writers: console, a JSONL file in the workdir, and wandb.

Only process 0 writes. wandb is imported lazily, so the training loop runs
where it is not installed; `mode='auto'` goes online when WANDB_API_KEY is set
and offline otherwise (sync later with `wandb sync <workdir>/wandb`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections

from im2latex_jax import workdir as workdir_lib


class MetricWriter:
  """Writes scalar dicts to the enabled sinks."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict | None = None,
               wandb_cfg: ml_collections.ConfigDict | None = None):
    self.active = jax.process_index() == 0
    self._file = None
    self._wandb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(workdir_lib.metrics_path(workdir), "a", encoding="utf-8")
    mode = (wandb_cfg.mode if wandb_cfg is not None else "disabled")
    if os.environ.get("WANDB_MODE"):
      mode = os.environ["WANDB_MODE"]
    if mode == "auto":
      mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if mode != "disabled":
      try:
        import wandb  # pylint: disable=g-import-not-at-top
      except ImportError:
        logging.warning("wandb is not installed; logging to metrics.jsonl only.")
      else:
        self._wandb = wandb.init(
            project=wandb_cfg.project, entity=wandb_cfg.entity, group=wandb_cfg.group,
            name=wandb_cfg.name or os.path.basename(os.path.abspath(workdir)),
            dir=workdir, mode=mode, resume="allow",
            id=_run_id(workdir), config=config.to_dict() if config is not None else None)

  def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> None:
    if not self.active:
      return
    scalars = {f"{prefix}{k}": float(v) for k, v in metrics.items()}
    self._file.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
    self._file.flush()
    if self._wandb is not None:
      self._wandb.log(scalars, step=int(step))

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None


def _run_id(workdir: str) -> str:
  """A stable wandb id per workdir, so a resumed run continues its curve."""
  path = os.path.join(workdir, "wandb_run_id.txt")
  if os.path.exists(path):
    with open(path) as f:
      return f.read().strip()
  import uuid  # pylint: disable=g-import-not-at-top
  rid = uuid.uuid4().hex[:12]
  with open(path, "w") as f:
    f.write(rid)
  return rid


def read_jsonl(path: str) -> list[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
