"""`get_data(config.input)`: the data source a config names (`config.input.loader`).

- 'tfds' (default): tf.data over the TFDS builder (data/input_pipeline.py);
- 'shards': numpy shards written by `im2latex-jax shards export` (data/shards.py);
- 'fake': random data in numpy, for benchmarks (data/shards.py).

Each returns a data/core.py `DataSource`; the trainer knows nothing else.
"""

from __future__ import annotations

import jax
import ml_collections

from im2latex_jax.data import core
from im2latex_jax.data import vocab as vocab_lib

LOADERS = ("tfds", "shards", "fake")


def get_data(cfg: ml_collections.ConfigDict, *, vocab: vocab_lib.Vocab | None = None,
             need_train: bool = True) -> core.DataSource:
  """The source of config.input.

  Args:
    cfg: config.input.
    vocab: encode with this vocabulary (tfds; a resumed or fine-tuned run's)
      instead of building one from cfg.vocab_split. Shards and fake data carry
      their own; a different one is an error.
    need_train: count the training split's keys (tfds; evaluation-only
      callers skip it).
  """
  loader = cfg.get("loader", "tfds")
  if loader not in LOADERS:
    raise ValueError(f"config.input.loader {loader!r} is not one of {LOADERS}.")
  if loader == "tfds":
    from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    return input_pipeline.get_data(cfg, vocab=vocab, need_train=need_train)
  # No TensorFlow on this path.
  from im2latex_jax.data import shards  # pylint: disable=g-import-not-at-top
  data = shards.get_data(cfg, process_index=jax.process_index(),
                         process_count=jax.process_count())
  if vocab is not None and vocab != data.vocab:
    where = cfg.get("shards_dir") or "the fake data"
    raise ValueError(f"The vocabulary of {where} ({len(data.vocab)} tokens) differs from "
                     f"the run's ({len(vocab)} tokens): export the shards with the run's "
                     "vocabulary or use a new --workdir.")
  return data
