"""A trained model from its workdir or an exported model directory.

A workdir holds `config.json`, `vocab.txt` and `checkpoints/`; an exported
directory (`im2latex-jax export-model`) `config.json`, `vocab.txt` and
`params.msgpack`. The vocabulary is always the one saved with the run. Below
both the trainer (`state`: `init_from`) and inference (`infer`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from im2latex_jax import checkpointing
from im2latex_jax import models
from im2latex_jax import optim
from im2latex_jax import workdir as workdir_lib
from im2latex_jax.data import vocab as vocab_lib


WorkdirError = workdir_lib.WorkdirError
load_config = workdir_lib.load_config


@dataclasses.dataclass
class LoadedModel:
  model: Any
  variables: dict[str, Any]
  vocab: vocab_lib.Vocab
  config: ml_collections.ConfigDict
  step: int
  model_id: str


EXPORTED_PARAMS = checkpointing.EXPORTED_PARAMS


def load_model(workdir: str, step: int | str = "best") -> LoadedModel:
  """Restores params and batch stats of `step` ('best', 'latest' or a number).

  `workdir` is a training workdir, or a directory written by `export_model`
  (params.msgpack + config.json + vocab.txt; `step` is then ignored).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(workdir):
    raise WorkdirError(f"Workdir {workdir} does not exist.")
  config = load_config(workdir)
  vocab = vocab_lib.Vocab.load(os.path.join(workdir, workdir_lib.VOCAB))
  if os.path.exists(os.path.join(workdir, EXPORTED_PARAMS)):
    return _load_exported(workdir, config, vocab)
  metric = config.optim.plateau.metric
  higher = metric in optim.MAXIMIZE
  mngr = checkpointing.make_manager(workdir, metric, read_only=True, higher_is_better=higher)
  steps = mngr.all_steps()
  if not steps:
    raise WorkdirError(
        f"{workdir} has no checkpoint yet (checkpoints/ is empty). Train until the "
        f"first evaluation (config.eval_every_steps={config.eval_every_steps}) or "
        "pass another workdir.")
  if step == "best":
    step = checkpointing.best_step(mngr, metric, higher_is_better=higher) or mngr.latest_step()
  elif step == "latest":
    step = mngr.latest_step()
  elif int(step) not in steps:
    raise WorkdirError(f"No checkpoint at step {step} in {workdir}; kept steps: {sorted(steps)}.")
  step = int(step)

  model, abstract = _abstract_variables(config, len(vocab))
  variables = _cast_onto(abstract, checkpointing.restore_variables(mngr, step))
  model_id = f"{os.path.basename(workdir)}@{step}"
  return LoadedModel(model, variables, vocab, config, step, model_id)


def _abstract_variables(config, vocab_size):
  """(model, its {'params', 'batch_stats'} as ShapeDtypeStructs): config ->
  model -> variable shapes; no optimizer, no trainer."""
  model = models.get_model(config.model, vocab_size)
  variables = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0)))
  return model, {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def _cast_onto(abstract, stored):
  """`stored` arrays with the structure and dtypes of `abstract`."""
  return jax.tree.map(lambda a, x: jnp.asarray(x, a.dtype), abstract, stored)


def _load_exported(path: str, config, vocab) -> LoadedModel:
  model, abstract = _abstract_variables(config, len(vocab))
  stored, meta = checkpointing.read_exported(path)
  # Stored in bfloat16 to keep the shipped file small; computed in float32.
  variables = _cast_onto(abstract, stored)
  step = int(meta.get("step", 0))
  return LoadedModel(model, variables, vocab, config, step,
                     str(meta.get("model_id", f"{os.path.basename(path)}@{step}")))


def mismatched_leaves(want: dict[str, Any], have: dict[str, Any], prefix: str = "") -> list[str]:
  """What keeps `have` from standing in for `want` (two variable trees): each
  leaf missing from `have`, in `have` only, or of another shape, as
  '<prefix><path> missing' / '... not in this model' / '... is (..), this model's (..)'."""
  want = flax.traverse_util.flatten_dict(want, sep="/")
  have = flax.traverse_util.flatten_dict(have, sep="/")
  problems = [f"{prefix}{k} missing" for k in sorted(set(want) - set(have))]
  problems += [f"{prefix}{k} not in this model" for k in sorted(set(have) - set(want))]
  problems += [f"{prefix}{k} is {tuple(np.shape(have[k]))}, this model's {tuple(np.shape(want[k]))}"
               for k in sorted(set(want) & set(have)) if np.shape(have[k]) != np.shape(want[k])]
  return problems
