"""Jit-compiled batched decoding of a trained model, blending and export.

Used by `evaluate`, the training-time decoding evaluator, `predict` and the
web server. Loading a model from its workdir is `im2latex_jax.loading`.
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
from im2latex_jax import loading
from im2latex_jax.infer import decode
from im2latex_jax import workdir as workdir_lib
from im2latex_jax.data import vocab as vocab_lib


# Loading lives in im2latex_jax.loading (below infer and the trainer); these
# names stay here for scripts and notebooks that import them from inference.
WorkdirError = loading.WorkdirError
load_config = loading.load_config
LoadedModel = loading.LoadedModel
EXPORTED_PARAMS = loading.EXPORTED_PARAMS
load_model = loading.load_model
mismatched_leaves = loading.mismatched_leaves


def step_fn(model, variables, enc):
  """`(carry, tokens) -> (logits, carry, aux)`: the model's `decode_step` over
  the encoding `enc`, for a decoding loop. A model with `decode_weights` (the
  im2markup decoder's regrouped kernels, token-gate table and attention
  values) has them computed here, once, outside the loop, not at every step."""
  if hasattr(model, "decode_weights"):
    weights = model.apply(variables, enc, method=model.decode_weights)
    return lambda carry, tokens: model.apply(variables, enc, carry, tokens, weights,
                                             method=model.decode_step)
  return lambda carry, tokens: model.apply(variables, enc, carry, tokens,
                                           method=model.decode_step)


def make_decode_fn(model, *, beam_size: int = 1, max_len: int = 152,
                   length_penalty: float = 0.0, collect_attention: bool = False,
                   loop_span: int = 0, eos_bias: float = 0.0):
  """Returns jit(fn)(variables, images, image_hw) -> dict of numpy-able arrays.

  Greedy (beam_size == 1) returns tokens [B, L], logprobs [B],
  token_logprobs [B, L], lengths [B] and, with collect_attention, attention
  [B, L, N] plus feature_hw [B, 2]. Beam search returns the best beam in the
  same keys (no per-token values) and all beams under 'beam_tokens'.
  `loop_span` > 0 stops a greedy sequence that loops (`decode.greedy_search`)
  and adds 'looped' [B]; `eos_bias` < 0 makes greedy end a sequence later
  (`decode.greedy_search`; config.evals.eos_bias).
  """
  if beam_size < 1:
    raise ValueError(f"beam size must be >= 1, got {beam_size}.")

  def fn(variables, images, image_hw):
    b = images.shape[0]
    enc = model.apply(variables, images, image_hw, method=model.encode)
    if beam_size == 1:
      return _greedy(model, variables, enc, max_len, collect_attention, loop_span, eos_bias)
    carry = model.apply(variables, enc, method=model.init_carry)
    tiled = jax.tree.map(lambda x: decode.flatten_beam_dim(decode.add_beam_dim(x, beam_size)), enc)
    step = step_fn(model, variables, tiled)

    def beam_step(carry, tokens):
      logits, carry, _ = step(carry, tokens)
      return logits, carry
    r = decode.beam_search(beam_step, carry, b, beam_size=beam_size, bos_id=vocab_lib.BOS,
                           eos_id=vocab_lib.EOS, max_len=max_len,
                           length_penalty=length_penalty)
    return {"tokens": r.tokens[:, 0], "logprobs": r.logprobs[:, 0], "lengths": r.lengths[:, 0],
            "beam_tokens": r.tokens, "beam_scores": r.scores}

  return jax.jit(fn)


def _greedy(model, variables, enc, max_len, collect_attention, loop_span, eos_bias=0.0):
  """make_decode_fn's greedy outputs from the encoder's outputs `enc`."""
  carry = model.apply(variables, enc, method=model.init_carry)
  r = decode.greedy_search(step_fn(model, variables, enc), carry, enc["mask"].shape[0], bos_id=vocab_lib.BOS,
                           eos_id=vocab_lib.EOS, max_len=max_len,
                           collect_aux=collect_attention, loop_span=loop_span,
                           eos_bias=float(eos_bias))
  out = {"tokens": r.tokens, "logprobs": r.logprobs,
         "token_logprobs": r.token_logprobs, "lengths": r.lengths}
  if loop_span:
    out["looped"] = r.looped
  if collect_attention:
    out["attention"] = r.aux
    out["feature_hw"] = enc["feature_hw"]
  return out


def make_encode_fn(model):
  """jit(fn)(variables, images, image_hw) -> the encoder's outputs (a dict)."""
  return jax.jit(lambda variables, images, image_hw: model.apply(
      variables, images, image_hw, method=model.encode))


def make_greedy_fn(model, *, max_len: int = 152, collect_attention: bool = False,
                   loop_span: int = 0, eos_bias: float = 0.0):
  """jit(fn)(variables, enc) -> make_decode_fn's greedy outputs, from encoder
  outputs (e.g. `pad_encodings` of images encoded on different canvases: on
  CPU a batch of k sequences decodes in about the time of one)."""
  return jax.jit(lambda variables, enc: _greedy(model, variables, enc, max_len,
                                                collect_attention, loop_span, eos_bias))


# Axis of the feature cells in each encoder output the decoders read.
CELL_AXES = {"memory": 1, "keys": 1, "mask": 1, "cross_keys": 2, "cross_values": 2}


def can_pad_encodings(enc: dict[str, Any]) -> bool:
  """Whether `pad_encodings` knows every array of this model's encoding."""
  return set(enc) - {"feature_hw"} <= set(CELL_AXES) and "mask" in enc


def pad_encodings(encs: list[dict[str, np.ndarray]], cells: int) -> dict[str, np.ndarray]:
  """Encoder outputs of single images (batch 1 each, any canvas) as one batch
  over `cells` feature cells: the extra cells are zeros and masked out, so
  attention gives them weight 0 and each sequence decodes as on its own."""
  out = {}
  for key in encs[0]:
    parts = []
    for enc in encs:
      x = np.asarray(enc[key])
      if key in CELL_AXES:
        ax = CELL_AXES[key]
        pad = [(0, 0)] * x.ndim
        pad[ax] = (0, cells - x.shape[ax])
        x = np.pad(x, pad)  # zeros; False for the mask
      parts.append(x)
    out[key] = np.concatenate(parts)
  return out


def ids_to_strings(vocab: vocab_lib.Vocab, tokens: np.ndarray) -> list[str]:
  return [vocab.decode(row) for row in np.asarray(tokens)]


def blend_variables(tuned: LoadedModel, base: LoadedModel,
                    alpha: float, module_alpha: dict[str, float] | None = None) -> dict[str, Any]:
  """`alpha * tuned + (1 - alpha) * base`, leaf by leaf (params and batch stats).

  Weight-space ensembling of a fine-tuned model with the one it started from
  (WiSE-FT, Wortsman et al. 2022): alpha 1 is the fine-tuned model, 0 the
  base; in between trades what fine-tuning gained against what it forgot.
  `module_alpha` gives some modules their own weight, by the path of a
  subtree of the variables ('cnn', 'rows', 'cell/embed'; the longest
  matching path wins, `alpha` is the rest's): e.g. the fine-tuned encoder
  whole with half of its decoder. Raises ValueError (one line) when the two
  are not the same network with the same vocabulary, or a weight is outside
  [0, 1], or a path names no module.
  """
  module_alpha = dict(module_alpha or {})
  for name, a in [("the blend weight", alpha)] + [(f"the weight of {k}", v)
                                                  for k, v in module_alpha.items()]:
    if not 0.0 <= a <= 1.0:
      raise ValueError(f"{name} must be in [0, 1], got {a}.")
  check_blendable(tuned, base)
  return lerp_variables(tuned.variables, base.variables, alpha, module_alpha)


def parse_module_alpha(spec: str) -> dict[str, float]:
  """'cnn=1,rows=0.8' -> {'cnn': 1.0, 'rows': 0.8}; ValueError (one line)
  naming the bad item otherwise."""
  out = {}
  for item in filter(None, (t.strip() for t in spec.split(","))):
    path, eq, value = item.partition("=")
    try:
      if not eq or not path.strip():
        raise ValueError
      out[path.strip().strip("/")] = float(value)
    except ValueError:
      raise ValueError(f"bad module weight {item!r}: write MODULE=WEIGHT, e.g. cnn=1.0,rows=1.0 "
                       "(MODULE a path of the parameter tree: cnn, rows, key_proj, cell, "
                       "cell/embed, ...).") from None
  return out


def check_blendable(tuned: LoadedModel, base: LoadedModel) -> None:
  """Raises ValueError (one line) unless the two are one network with one
  vocabulary (a model and one fine-tuned from it)."""
  if tuned.vocab.tokens != base.vocab.tokens:
    raise ValueError(f"{base.model_id} has another vocabulary ({len(base.vocab)} tokens) than "
                     f"{tuned.model_id} ({len(tuned.vocab)}): only a model and one fine-tuned "
                     "from it can be blended.")
  bad = mismatched_leaves(tuned.variables, base.variables)
  if bad:
    raise ValueError(f"{base.model_id} is another network than {tuned.model_id} "
                     f"({len(bad)} parameters differ, e.g. {bad[0]}): blend a model with one "
                     "fine-tuned from it.")


def lerp_variables(tuned: dict[str, Any], base: dict[str, Any], alpha: float,
                   module_alpha: dict[str, float] | None = None) -> dict[str, Any]:
  """`alpha * tuned + (1 - alpha) * base`, leaf by leaf, in float32; a leaf
  under a path of `module_alpha` (collections such as 'params' not counted:
  'cnn' is params/cnn and batch_stats/cnn) takes that path's weight."""
  want = flax.traverse_util.flatten_dict(tuned, sep="/")
  have = flax.traverse_util.flatten_dict(base, sep="/")
  module_alpha = module_alpha or {}
  weight = {}
  for k in want:
    inner = k.split("/", 1)[1] if "/" in k else k
    hits = [m for m in module_alpha if inner == m or inner.startswith(m + "/")]
    weight[k] = module_alpha[max(hits, key=len)] if hits else alpha
  unused = [m for m in module_alpha
            if not any(k.split("/", 1)[-1] == m or k.split("/", 1)[-1].startswith(m + "/")
                       for k in want)]
  if unused:
    tops = sorted({k.split("/")[1] for k in want if k.count("/") >= 1})
    raise ValueError(f"no module {unused[0]!r} in the model (its modules: {', '.join(tops)}).")
  return flax.traverse_util.unflatten_dict(
      {k: (weight[k] * np.asarray(want[k], np.float32)
           + (1.0 - weight[k]) * np.asarray(have[k], np.float32)) for k in want}, sep="/")


def export_model(workdir: str, out_dir: str, step: int | str = "best",
                 dtype: str = "bfloat16", extra_meta: dict | None = None,
                 blend: str | None = None, alpha: float = 1.0,
                 module_alpha: dict[str, float] | None = None) -> str:
  """Writes a small, self-contained model dir (params + config + vocab).

  With `blend` (a model dir or workdir), the exported weights are
  `alpha * workdir's + (1 - alpha) * blend's` (`blend_variables`; per module
  with `module_alpha`).
  """
  lm = load_model(workdir, step)
  variables = lm.variables
  meta = {"step": lm.step, "model_id": lm.model_id, **(extra_meta or {})}
  if blend is not None:
    base = load_model(blend)
    variables = blend_variables(lm, base, alpha, module_alpha)
    per_module = ",".join(f"{m}={a:g}" for m, a in sorted((module_alpha or {}).items()))
    rest = f"[{per_module}]+{base.model_id}" if per_module else f"+{base.model_id}*{1 - alpha:g}"
    meta.update(model_id=f"{lm.model_id}*{alpha:g}{rest}",
                blend={"tuned": lm.model_id, "base": base.model_id, "alpha": alpha,
                       "module_alpha": dict(module_alpha or {})})
  return write_exported(out_dir, variables, lm.config, lm.vocab, meta, dtype)


def write_exported(out_dir: str, variables: dict[str, Any], config: ml_collections.ConfigDict,
                   vocab: vocab_lib.Vocab, meta: dict[str, Any], dtype: str = "bfloat16") -> str:
  """The model dir `load_model` reads: params.msgpack (variables in `dtype`
  + meta), config.json, vocab.txt."""
  import flax.serialization  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  cast = jax.tree.map(lambda x: np.asarray(jnp.asarray(x, dtype)), variables)
  with open(os.path.join(out_dir, EXPORTED_PARAMS), "wb") as f:
    f.write(flax.serialization.msgpack_serialize({**cast, "meta": {**meta, "dtype": dtype}}))
  workdir_lib.write_config(out_dir, config)
  vocab.save(os.path.join(out_dir, vocab_lib.VOCAB_FILENAME))
  return out_dir


def export_main(argv: list[str]) -> int:
  """`im2latex-jax export-model --workdir W --out DIR [--step best] [--dtype bfloat16]
  [--blend MODEL --alpha A [--module-alpha cnn=1,rows=1]]`."""
  import argparse  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog=argv[0], description=export_main.__doc__)
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--step", default="best", help="'best', 'latest' or a step number")
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--blend", metavar="MODEL", default=None,
                 help="export ALPHA * the workdir's weights + (1 - ALPHA) * MODEL's (a model "
                      "dir or workdir: the one the run was fine-tuned from; WiSE-FT)")
  p.add_argument("--alpha", type=float, default=0.5,
                 help="weight of --workdir in the --blend (default 0.5)")
  p.add_argument("--module-alpha", default="", metavar="MODULE=A,...",
                 help="per-module weights overriding --alpha for a subtree of the parameters, "
                      "e.g. cnn=1,rows=1 (the fine-tuned encoder whole, the decoder at --alpha)")
  args = p.parse_args(argv[1:])
  try:
    if args.module_alpha and args.blend is None:
      raise ValueError("--module-alpha needs --blend MODEL (the model to blend with).")
    out = export_model(args.workdir, args.out, args.step, args.dtype,
                       blend=args.blend, alpha=args.alpha,
                       module_alpha=parse_module_alpha(args.module_alpha))
  except (WorkdirError, FileNotFoundError, ValueError) as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  size = os.path.getsize(os.path.join(out, EXPORTED_PARAMS))
  print(f"exported {args.workdir} ({args.step}) -> {out} ({size / 1e6:.1f} MB)")
  return 0
