"""A trained model from its workdir, and jit-compiled batched decoding.

Used by `evaluate`, the training-time decoding evaluator, `predict` and the
web server. A workdir holds `config.json`, `vocab.txt` and `checkpoints/`; the
vocabulary is always the one saved with the run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from im2latex_jax import checkpointing
from im2latex_jax import decode
from im2latex_jax import train
from im2latex_jax.data import vocab as vocab_lib


class WorkdirError(ValueError):
  """A workdir that has no usable model."""


@dataclasses.dataclass
class LoadedModel:
  model: Any
  variables: dict[str, Any]
  vocab: vocab_lib.Vocab
  config: ml_collections.ConfigDict
  step: int
  model_id: str


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(
        f"{workdir} has no config.json: it is not the workdir of a training run. "
        "Train one with `im2latex-jax train --config configs/quickstart.py --workdir W`.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_model(workdir: str, step: int | str = "best") -> LoadedModel:
  """Restores params and batch stats of `step` ('best', 'latest' or a number)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(workdir):
    raise WorkdirError(f"Workdir {workdir} does not exist.")
  config = load_config(workdir)
  vocab = vocab_lib.Vocab.load(os.path.join(workdir, vocab_lib.VOCAB_FILENAME))
  metric = config.optim.plateau.metric
  mngr = checkpointing.make_manager(workdir, metric, read_only=True)
  steps = mngr.all_steps()
  if not steps:
    raise WorkdirError(
        f"{workdir} has no checkpoint yet (checkpoints/ is empty). Train until the "
        f"first evaluation (config.eval_every_steps={config.eval_every_steps}) or "
        "pass another workdir.")
  if step == "best":
    step = checkpointing.best_step(mngr, metric) or mngr.latest_step()
  elif step == "latest":
    step = mngr.latest_step()
  elif int(step) not in steps:
    raise WorkdirError(f"No checkpoint at step {step} in {workdir}; kept steps: {sorted(steps)}.")
  step = int(step)

  model, tx, plateau = train.build_model_and_optimizer(config, len(vocab))
  init = train.make_init_fn(model, tx, plateau, config, (32, 128))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(init, jax.random.key(0)))
  state, _ = checkpointing.restore(mngr, step, abstract)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  model_id = f"{os.path.basename(workdir)}@{step}"
  return LoadedModel(model, variables, vocab, config, step, model_id)


def make_decode_fn(model, *, beam_size: int = 1, max_len: int = 152,
                   length_penalty: float = 0.0, collect_attention: bool = False):
  """Returns jit(fn)(variables, images, image_hw) -> dict of numpy-able arrays.

  Greedy (beam_size == 1) returns tokens [B, L], logprobs [B],
  token_logprobs [B, L], lengths [B] and, with collect_attention, attention
  [B, L, N] plus feature_hw [B, 2]. Beam search returns the best beam in the
  same keys (no per-token values) and all beams under 'beam_tokens'.
  """
  if beam_size < 1:
    raise ValueError(f"beam size must be >= 1, got {beam_size}.")

  def fn(variables, images, image_hw):
    b = images.shape[0]
    enc = model.apply(variables, images, image_hw, method=model.encode)
    carry = model.apply(variables, enc, method=model.init_carry)
    if beam_size == 1:
      def step_fn(carry, tokens):
        return model.apply(variables, enc, carry, tokens, method=model.decode_step)
      r = decode.greedy_search(step_fn, carry, b, bos_id=vocab_lib.BOS, eos_id=vocab_lib.EOS,
                               max_len=max_len, collect_aux=collect_attention)
      out = {"tokens": r.tokens, "logprobs": r.logprobs,
             "token_logprobs": r.token_logprobs, "lengths": r.lengths}
      if collect_attention:
        out["attention"] = r.aux
        out["feature_hw"] = enc["feature_hw"]
      return out
    tiled = jax.tree.map(lambda x: decode.flatten_beam_dim(decode.add_beam_dim(x, beam_size)), enc)

    def beam_step(carry, tokens):
      logits, carry, _ = model.apply(variables, tiled, carry, tokens, method=model.decode_step)
      return logits, carry
    r = decode.beam_search(beam_step, carry, b, beam_size=beam_size, bos_id=vocab_lib.BOS,
                           eos_id=vocab_lib.EOS, max_len=max_len,
                           length_penalty=length_penalty)
    return {"tokens": r.tokens[:, 0], "logprobs": r.logprobs[:, 0], "lengths": r.lengths[:, 0],
            "beam_tokens": r.tokens, "beam_scores": r.scores}

  return jax.jit(fn)


def ids_to_strings(vocab: vocab_lib.Vocab, tokens: np.ndarray) -> list[str]:
  return [vocab.decode(row) for row in np.asarray(tokens)]
