"""Decoding evaluation: predictions for a split and im2markup's text metrics.

`decode_split` turns bucketed eval batches into one `DecodedExample` per real
example (padding examples, `weight == 0`, are dropped); both the training-time
`DecodeEvaluator` and `im2latex-jax evaluate` (evaluate.py) use it, so the
numbers logged during training and the ones of the evaluate command come from
the same code.

Metric conventions are those of metrics.py: `bleu4` in [0, 100] (Moses
multi-bleu), `edit_accuracy` and `exact_match` in [0, 1]. All three are
maximised (optim.MAXIMIZE), so any of them can drive the plateau schedule and
the best checkpoint through `config.optim.plateau.metric`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, NamedTuple

from absl import logging
import jax
import numpy as np

from im2latex_jax.infer import inference
from im2latex_jax.evaluation import metrics as metrics_lib
from im2latex_jax import sharding
from im2latex_jax.data import core

PyTree = Any

class DecodedExample(NamedTuple):
  """One decoded example."""
  image_name: str
  gold: str        # the reference formula, as stored in the dataset
  prediction: str  # space-separated tokens, without BOS/EOS
  logprob: float   # natural-log probability of the prediction (best beam)


def _host_rows(x: jax.Array | np.ndarray) -> np.ndarray:
  """This host's rows of a batch-sharded output, in local batch order."""
  if isinstance(x, np.ndarray) or jax.process_count() == 1:
    return np.asarray(x)
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def decode_split(decode_fn: Callable, variables: PyTree, vocab, batches: Iterable[core.Batch],
                 mesh: jax.sharding.Mesh | None = None, *,
                 max_examples: int | None = None,
                 timings: dict[str, float] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[DecodedExample]:
  """Decodes every real example of `batches` (this host's part).

  Args:
    decode_fn: from `inference.make_decode_fn` (greedy or beam): a jitted
      (variables, images, image_hw) -> {'tokens', 'logprobs', ...}.
    variables: {'params', 'batch_stats'}; replicated on `mesh` when given,
      else on one device.
    vocab: the run's Vocab.
    batches: numpy batches with 'formula' and 'image_name' (a DataSource's
      `eval_batches(..., with_strings=True)`).
    mesh: split each batch over this mesh's 'data' axis (the batch size must
      be a multiple of its devices); None feeds the arrays as they are.
    max_examples: stop after this many real examples.
    timings: if given, receives 'decode_seconds' (all batches, compilation
      included), 'first_batch_seconds' and 'first_batch_examples' (the first
      batch of each image shape, where a compilation may happen).
    progress: called with the number of examples decoded after each batch.

  Returns:
    One DecodedExample per example with weight > 0, in batch order.
  """
  out: list[DecodedExample] = []
  seen_shapes: set[tuple[int, ...]] = set()
  total = first = 0.0
  first_examples = 0
  for batch in batches:
    if max_examples is not None and len(out) >= max_examples:
      break
    t = time.perf_counter()
    if mesh is not None:
      arrays = sharding.shard_batch({k: batch[k] for k in ("image", "image_hw")}, mesh)
    else:
      arrays = {k: batch[k] for k in ("image", "image_hw")}
    result = decode_fn(variables, arrays["image"], arrays["image_hw"])
    tokens = _host_rows(result["tokens"])  # [B, L]
    logprobs = _host_rows(result["logprobs"])  # [B]
    dt = time.perf_counter() - t
    total += dt
    if batch["image"].shape not in seen_shapes:
      seen_shapes.add(batch["image"].shape)
      first += dt
      first_examples += int(np.sum(np.asarray(batch["weight"]) > 0))
    predictions = inference.ids_to_strings(vocab, tokens)
    for i in np.flatnonzero(np.asarray(batch["weight"]) > 0):
      out.append(DecodedExample(_text(batch["image_name"][i]), _text(batch["formula"][i]),
                            predictions[i], float(logprobs[i])))
    if progress is not None:
      progress(len(out) if max_examples is None else min(len(out), max_examples))
  if max_examples is not None:
    out = out[:max_examples]
  if timings is not None:
    timings.update(decode_seconds=total, first_batch_seconds=first,
                   first_batch_examples=min(first_examples, len(out)))
  return out


def text_metrics(predictions: list[DecodedExample]) -> dict[str, float]:
  """{'bleu4' (0..100), 'edit_accuracy' (0..1), 'exact_match' (0..1)}."""
  return metrics_lib.text_metrics([p.gold for p in predictions],
                                  [p.prediction for p in predictions])


class DecodeEvaluator:
  """Greedy decoding of the first examples of the eval split during training.

  The trainer hands it plain functions: `decode_fn` (jitted once, so each run
  reuses the compiled programs, one per bucket shape) and `batches_fn`, which
  returns the split's batches with formula strings (any DataSource).
  """

  def __init__(self, decode_fn: Callable, vocab, batches_fn: Callable[[], Iterable[core.Batch]],
               mesh: jax.sharding.Mesh, *, max_examples: int | None = None):
    self.decode_fn = decode_fn
    self.vocab = vocab
    self.batches_fn = batches_fn
    self.mesh = mesh
    self.max_examples = max_examples
    self.last_predictions: list[DecodedExample] = []

  def run(self, variables: PyTree) -> dict[str, float]:
    """Text metrics of greedy decoding with these parameters.

    Args:
      variables: {'params', 'batch_stats'} replicated on the mesh.

    Returns:
      {'bleu4', 'edit_accuracy', 'exact_match', 'decode_examples',
      'decode_seconds'}.
    """
    timings: dict[str, float] = {}
    preds = decode_split(self.decode_fn, variables, self.vocab, self.batches_fn(), self.mesh,
                         max_examples=self.max_examples, timings=timings)
    self.last_predictions = preds
    out = text_metrics(preds)
    out.update(decode_examples=float(len(preds)), decode_seconds=timings["decode_seconds"])
    logging.info("Decode eval: BLEU-4 %.2f, edit acc %.4f, exact %.4f (%d ex, %.1fs)",
                 out["bleu4"], out["edit_accuracy"], out["exact_match"], len(preds),
                 timings["decode_seconds"])
    return out
