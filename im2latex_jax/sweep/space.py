"""Search spaces: `configs/sweeps/<name>.py` files and their validation.

A space file defines `get_space()` returning a dict:

  config     the base training config, a path relative to the space file
             (optionally `file.py:arg`), e.g. '../quickstart.py';
  metric     a key of the runs' metrics.jsonl, e.g. 'eval/loss' or 'eval/bleu4';
  direction  'minimize' or 'maximize' ('min' / 'max' accepted);
  sampler    'grid' (every combination once), 'bayes' (TPE) or 'gp';
  params     {config key: [choices] | {'low': a, 'high': b, 'log': bool[, 'step': s]}};
  fixed      {config key: value} applied to every trial (optional);
  trials     default number of finished trials for 'bayes'/'gp' (grid: its size);
  pruner     {'kind': 'median' | 'none', 'n_startup_trials': 2, 'n_warmup_steps': 0};
             default 'median', or 'none' for a grid;
  seed       sampler seed (optional).

Every key in `params` and `fixed` is checked against the *locked* base config
before any trial starts, so a typo fails at once instead of in trial 0.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from typing import Any

import ml_collections

from im2latex_jax import defaults

SAMPLERS = ("grid", "bayes", "gp")
PRUNERS = ("median", "none")
# Eval metrics train.py reports without a decoding evaluator.
LOSS_METRICS = ("loss", "perplexity", "token_accuracy", "examples")


class SpaceError(ValueError):
  """A search space that cannot run; the message names the value and the fix."""


@dataclasses.dataclass(frozen=True)
class Space:
  """A validated search space."""
  path: str                  # the space file
  config: str                # as written in the file (portable between hosts)
  config_path: str           # absolute, with ':arg' if any
  metric: str
  direction: str             # 'minimize' | 'maximize'
  sampler: str
  params: dict[str, Any]     # key -> list of choices or {'low','high','log','step'}
  fixed: dict[str, Any]
  trials: int | None
  pruner: dict[str, Any]
  seed: int | None

  def to_json(self) -> str:
    """What must match between runs of one study (stored in its user attrs)."""
    return json.dumps({"config": self.config, "metric": self.metric,
                       "direction": self.direction, "sampler": self.sampler,
                       "params": self.params, "fixed": self.fixed},
                      sort_keys=True, default=_jsonable)

  def grid(self) -> dict[str, list[Any]]:
    return {k: [optuna_value(c) for c in v] for k, v in self.params.items()}

  def grid_size(self) -> int:
    return math.prod(len(v) for v in self.params.values())

  def grid_points(self) -> list[dict[str, Any]]:
    keys = list(self.params)
    return [dict(zip(keys, combo)) for combo in itertools.product(*self.grid().values())]


def _jsonable(x):
  return list(x) if isinstance(x, tuple) else str(x)


def optuna_value(v: Any) -> Any:
  """Optuna categoricals hold None/bool/int/float/str: tuples become strings."""
  if isinstance(v, (tuple, list)):
    return str(tuple(v))
  return v


def cli_value(v: Any) -> str:
  """A value as `--config.key=<value>` expects it (tuples as '(a, b)')."""
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, (tuple, list)):
    return str(tuple(v))
  if isinstance(v, float):
    return repr(v)
  return str(v)


def _import_file(path: str, what: str):
  if not os.path.isfile(path):
    raise SpaceError(f"{what} {path} does not exist.")
  try:
    return defaults.import_file(path, f"_im2latex_{what.replace(' ', '_')}_{abs(hash(path))}")
  except Exception as e:  # pylint: disable=broad-except
    raise SpaceError(f"{what} {path} does not import: {type(e).__name__}: {e}") from e


def load_base_config(config_path: str) -> ml_collections.ConfigDict:
  """The base config as `train` sees it: `get_config(arg)`, locked."""
  path, _, arg = config_path.partition(":")
  module = _import_file(path, "config file")
  if not hasattr(module, "get_config"):
    raise SpaceError(f"config file {path} has no get_config().")
  cfg = module.get_config(arg) if arg else module.get_config()
  cfg.lock()
  return cfg


def _lookup(cfg: ml_collections.ConfigDict, key: str):
  node = cfg
  parts = key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parts[:i]) or "the top level"
      near = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise SpaceError(f"config key {key!r} does not exist in the base config "
                       f"(no {part!r} under {where}; it has {near}).")
    node = node[part]
  return node


def _check_value(key: str, base: Any, v: Any) -> None:
  """`v` must be something `--config.key=` accepts for a field holding `base`."""
  if base is None:
    raise SpaceError(
        f"config key {key!r} is None in the base config, and ml_collections cannot "
        "override a None field from the command line; give it a typed default in the "
        "config file (or ml_collections.config_dict.placeholder(type)).")
  if isinstance(base, ml_collections.ConfigDict):
    raise SpaceError(f"config key {key!r} is a group, not a field; name one of its "
                     f"fields ({', '.join(sorted(base.keys()))}).")
  ok = {bool: lambda x: isinstance(x, bool),
        int: lambda x: isinstance(x, int) and not isinstance(x, bool),
        float: lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
        str: lambda x: isinstance(x, str),
        tuple: lambda x: isinstance(x, (tuple, list))}.get(type(base), lambda x: True)
  if not ok(v):
    raise SpaceError(f"config key {key!r} holds a {type(base).__name__} "
                     f"({base!r}); the value {v!r} is a {type(v).__name__}.")


def _norm_direction(d: str) -> str:
  d = str(d).lower()
  if d in ("min", "minimize"):
    return "minimize"
  if d in ("max", "maximize"):
    return "maximize"
  raise SpaceError(f"direction {d!r} is not 'minimize' or 'maximize'.")


def load_space(path: str) -> Space:
  """Loads and validates `path` (a configs/sweeps/*.py file)."""
  path = os.path.abspath(path)
  module = _import_file(path, "space file")
  if not hasattr(module, "get_space"):
    raise SpaceError(f"space file {path} has no get_space().")
  raw = dict(module.get_space())
  unknown = set(raw) - {f.name for f in dataclasses.fields(Space)} - {"path", "config_path"}
  if unknown:
    raise SpaceError(f"space file {path}: unknown entries {sorted(unknown)}.")
  for req in ("config", "metric", "params"):
    if req not in raw:
      raise SpaceError(f"space file {path} gives no {req!r}.")

  config = str(raw["config"])
  cfg_file, sep, arg = config.partition(":")
  if not os.path.isabs(cfg_file):
    cfg_file = os.path.normpath(os.path.join(os.path.dirname(path), cfg_file))
  config_path = cfg_file + (sep + arg if sep else "")
  base = load_base_config(config_path)

  sampler = str(raw.get("sampler", "bayes")).lower()
  if sampler == "tpe":
    sampler = "bayes"
  if sampler not in SAMPLERS:
    raise SpaceError(f"sampler {sampler!r} is not one of {SAMPLERS}.")

  params = dict(raw["params"])
  if not params:
    raise SpaceError(f"space file {path} has no params to search.")
  for key, spec in params.items():
    cur = _lookup(base, key)
    if isinstance(spec, (list, tuple)):
      if not spec:
        raise SpaceError(f"param {key!r} has an empty list of choices.")
      for v in spec:
        _check_value(key, cur, v)
      params[key] = list(spec)
    elif isinstance(spec, dict):
      if sampler == "grid":
        raise SpaceError(f"param {key!r}: a grid sweep needs a list of values, not a range.")
      if set(spec) - {"low", "high", "log", "step"} or not {"low", "high"} <= set(spec):
        raise SpaceError(f"param {key!r}: a range is {{'low', 'high'[, 'log', 'step']}}, "
                         f"got {sorted(spec)}.")
      if not spec["low"] < spec["high"]:
        raise SpaceError(f"param {key!r}: low {spec['low']} must be below high {spec['high']}.")
      if spec.get("log") and spec["low"] <= 0:
        raise SpaceError(f"param {key!r}: a log range needs low > 0, got {spec['low']}.")
      _check_value(key, cur, spec["low"])
      _check_value(key, cur, spec["high"])
      params[key] = {"low": spec["low"], "high": spec["high"],
                     "log": bool(spec.get("log", False)),
                     **({"step": spec["step"]} if "step" in spec else {})}
    else:
      raise SpaceError(f"param {key!r}: give a list of choices or a dict range, got {spec!r}.")

  fixed = dict(raw.get("fixed", {}))
  for key, v in fixed.items():
    if key in params:
      raise SpaceError(f"config key {key!r} is both searched and fixed.")
    _check_value(key, _lookup(base, key), v)

  metric = str(raw["metric"])
  kind, _, name = metric.partition("/")
  if kind not in ("eval", "train") or not name:
    raise SpaceError(f"metric {metric!r} must be 'eval/<name>' or 'train/<name>' "
                     "(a key of the runs' metrics.jsonl).")
  decode_every = fixed.get("evals.decode_every_steps", base.evals.decode_every_steps)
  if kind == "eval" and name not in LOSS_METRICS and not decode_every:
    raise SpaceError(f"metric {metric!r} comes from the decoding evaluator, which is off "
                     "(evals.decode_every_steps=0); set it in 'fixed' or optimize eval/loss.")

  pruner = dict(raw.get("pruner") or {})
  # A grid is run exhaustively unless it asks for pruning explicitly.
  pruner.setdefault("kind", "none" if raw.get("sampler") == "grid" else "median")
  if pruner["kind"] not in PRUNERS:
    raise SpaceError(f"pruner {pruner['kind']!r} is not one of {PRUNERS}.")

  trials = raw.get("trials")
  if sampler == "grid":
    trials = math.prod(len(v) for v in params.values())
  return Space(path=path, config=config, config_path=config_path, metric=metric,
               direction=_norm_direction(raw.get("direction", "minimize")),
               sampler=sampler, params=params, fixed=fixed,
               trials=int(trials) if trials else None, pruner=pruner,
               seed=raw.get("seed"))


def suggest(trial, space: Space) -> dict[str, Any]:
  """Asks `trial` for one value per param; returns {config key: value}."""
  out = {}
  for key, spec in space.params.items():
    if isinstance(spec, list):
      choices = [optuna_value(c) for c in spec]
      out[key] = trial.suggest_categorical(key, choices)
    elif all(isinstance(spec[k], int) for k in ("low", "high")) and isinstance(
        spec.get("step", 1), int):
      out[key] = trial.suggest_int(key, spec["low"], spec["high"], log=spec["log"],
                                   step=spec.get("step", 1))
    else:
      out[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                     log=spec["log"], step=spec.get("step"))
  return out


def overrides(space: Space, params: dict[str, Any]) -> list[str]:
  """`--config.key=value` flags for the fixed values and one trial's params."""
  merged = {**space.fixed, **params}
  return [f"--config.{k}={cli_value(v)}" for k, v in merged.items()]
