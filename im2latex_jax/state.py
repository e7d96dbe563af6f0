"""The train state, and the model and optimizer it is built from.

Below train.py: the trainer, the benchmark and the tests build the same
state from here. Prediction never needs it (loading.py loads config ->
model -> variables).
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from im2latex_jax import loading
from im2latex_jax import models
from im2latex_jax import optim
from im2latex_jax import workdir as workdir_lib

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; arrays only."""
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  plateau: PyTree

  @property
  def variables(self) -> dict[str, PyTree]:
    """{'params', 'batch_stats'}: what model.apply, decoding and evaluation take."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def build_model_and_optimizer(config: ml_collections.ConfigDict, vocab_size: int):
  """(model, direction transform, plateau transform) of a config."""
  model = models.get_model(config.model, vocab_size)
  tx = optim.make_direction(config.optim)
  plateau = optim.make_plateau(config.optim)
  return model, tx, plateau


def make_init_fn(model, tx, plateau, cfg: ml_collections.ConfigDict,
                 sample_hw=models.INIT_HW):
  """init(rng) -> TrainState; jit it with out_shardings to place it."""
  h, w = sample_hw

  def init(rng):
    init_rng, scheme_rng = jax.random.split(rng)
    variables = models.init_variables(model, init_rng, (h, w))
    params = models.apply_init_scheme(variables["params"], cfg.model, scheme_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), plateau=plateau.init(params))
  return init


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def init_vocab(config: ml_collections.ConfigDict, workdir: str):
  """The vocabulary a run must use: the workdir's, or config.init_from's.

  Raises ValueError (one line) when both exist and differ: a workdir started
  from another model cannot be continued from this one.
  """
  saved = workdir_lib.load_vocab(workdir)
  if not config.get("init_from"):
    return saved
  path = os.path.abspath(os.path.expanduser(config.init_from))
  source = workdir_lib.load_vocab(path)
  if source is None:
    raise FileNotFoundError(f"config.init_from={config.init_from}: "
                            f"{os.path.join(path, workdir_lib.VOCAB)} does not exist; "
                            "give an exported model dir or a training workdir.")
  if saved is not None and saved != source:
    raise ValueError(f"config.init_from={config.init_from} has a vocabulary of {len(source)} "
                     f"tokens that differs from {workdir}/vocab.txt ({len(saved)}): use a new "
                     "--workdir for a run started from this model.")
  return source


def load_init_from(state: TrainState, path: str, tx, plateau) -> TrainState:
  """`state` with the params and batch stats of the model at `path` and a
  fresh optimizer and plateau state for them; the step stays 0.

  Raises ValueError naming the parameters that do not fit (missing, extra or
  of another shape) when `path` holds another network than config.model.
  """
  # Either kind of dir (a workdir: its best checkpoint), without an optimizer.
  source = loading.load_model(path)
  stored, step = source.variables, source.step
  new = {}
  for group in ("params", "batch_stats"):
    problems = loading.mismatched_leaves(getattr(state, group), stored.get(group, {}),
                                           prefix=f"{group}/")
    if problems:
      more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
      raise ValueError(f"config.init_from={path} does not fit config.model: "
                       f"{'; '.join(problems[:3])}{more}. Set config.model as in "
                       f"{os.path.join(path, workdir_lib.CONFIG)}.")
    want = flax.traverse_util.flatten_dict(getattr(state, group), sep="/")
    have = flax.traverse_util.flatten_dict(stored.get(group, {}), sep="/")
    new[group] = flax.traverse_util.unflatten_dict(
        {k: jnp.asarray(np.asarray(have[k]), want[k].dtype) for k in want}, sep="/")
  logging.info("Initialized from %s (its step %d); fresh optimizer.", path, step)
  return state.replace(params=new["params"], batch_stats=new["batch_stats"],
                       opt_state=tx.init(new["params"]), plateau=plateau.init(new["params"]))
