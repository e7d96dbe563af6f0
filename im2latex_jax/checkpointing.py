"""Orbax checkpoints: the latest one plus the best by the validation metric.

Layout of a workdir:
  checkpoints/<step>/{state,meta}   Orbax; `meta` holds the metrics (JSON)
  config.json, vocab.txt            beside them, written at the first start
  metrics.jsonl                     the local log (writers.py)

The preservation policy is *latest 1 + best 1*: with `best_fn` and
`max_to_keep` alone Orbax can delete the newest checkpoint, and a resume would
go back in time (shared/DESIGN.md).
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

CKPT_DIR = "checkpoints"
# An exported model dir (`im2latex-jax export-model`): these + config.json + vocab.txt.
EXPORTED_PARAMS = "params.msgpack"


def _lower_is_better(metric: str, higher_is_better: bool):
  """The metric as a value to minimise (the caller says which way is better:
  this module stores what it is given and knows no metric)."""
  sign = -1.0 if higher_is_better else 1.0

  def get(metrics: dict[str, Any]) -> float:
    return sign * float(metrics[metric])
  return get


def make_manager(workdir: str, metric: str = "loss", keep_best: bool = True,
                 read_only: bool = False, *,
                 higher_is_better: bool = False) -> ocp.CheckpointManager:
  """A manager for `<workdir>/checkpoints` (absolute path: Orbax needs one),
  keeping the latest checkpoint and the best by `metric`."""
  path = os.path.join(os.path.abspath(workdir), CKPT_DIR)
  policies = [ocm.LatestN(1)]
  if keep_best:
    # BestN keeps the *last* n after sorting; reverse=True sorts descending,
    # so it keeps the lowest value to minimise (the best for either direction).
    policies.append(ocm.BestN(get_metric_fn=_lower_is_better(metric, higher_is_better),
                              reverse=True, n=1,
                              keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocm.AnyPreservationPolicy(policies),
      create=not read_only, read_only=read_only,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))


def save(mngr: ocp.CheckpointManager, step: int, state,
         metrics: dict[str, float] | None) -> None:
  """Saves asynchronously; `metrics=None` for a checkpoint outside an eval
  (kept as the latest, never ranked as best)."""
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave({"step": step, **(metrics or {})})),
            metrics=metrics or None)


def best_step(mngr: ocp.CheckpointManager, metric: str = "loss", *,
              higher_is_better: bool = False) -> int | None:
  """The kept step with the best `metric` (None if no step has it)."""
  value = _lower_is_better(metric, higher_is_better)
  scored = []
  for step in mngr.all_steps():
    meta = restore_meta(mngr, step)
    if metric in meta:
      scored.append((value(meta), step))
  return min(scored)[1] if scored else None


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """Restores `state` onto the shardings of `abstract_state` (ShapeDtypeStructs)."""
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return out["state"], out["meta"]


def restore_meta(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def read_exported(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """({'params', 'batch_stats'} as stored, meta) of an exported model dir."""
  import flax.serialization  # pylint: disable=g-import-not-at-top
  with open(os.path.join(path, EXPORTED_PARAMS), "rb") as f:
    raw = flax.serialization.msgpack_restore(f.read())
  meta = raw.pop("meta", {})
  return {"params": raw["params"], "batch_stats": raw.get("batch_stats", {})}, meta


def restore_variables(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """{'params', 'batch_stats'} of a checkpoint, as stored: no optimizer or
  plateau state is built or needed (prediction, fine-tuning)."""
  import jax  # pylint: disable=g-import-not-at-top
  # Shapes and dtypes from the checkpoint's own metadata, placed on this
  # process's first device: the saving run's mesh need not exist here.
  md = ocp.StandardCheckpointer().metadata(os.path.join(str(mngr.directory), str(step), "state"))
  tree = getattr(md, "item_metadata", md)
  tree = getattr(tree, "tree", tree)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  state = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]
  return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
