"""A TensorFlow-free data source: bucketed numpy shards, and fake data.

Accelerator machines of this project have JAX but no TensorFlow (shared/
DESIGN.md). This module lets training run there:

  # where TensorFlow is installed: the tf.data pipeline's own key assignment
  im2latex-jax shards export --config configs/quickstart.py --out DIR
  # anywhere (no TensorFlow, no wandb): train from the shards
  im2latex-jax shards train --config configs/quickstart.py --shards DIR \
      --workdir W [--config.x=y ...]

`im2latex-jax train` reads them when `config.input.loader == 'shards'` (with
`config.input.shards_dir`); `'fake'` generates random data in numpy
(configs/fake_bench.py). Both are a `ShardSource` (data/core.py's DataSource).

This module owns the shards format (`ShardWriter` writes it, `load` reads it):
  index.json                 format, keys grid, per-split key counts and files
  vocab.txt                  the vocabulary the tokens were encoded with
  <split>/k<key>_<part>.npz  (split name made file-safe) image uint8 [N, H, W, 1]
                             (padded to the key's bucket), image_hw int32
                             [N, 2], tokens int32 [N, T] (BOS ids EOS PAD...),
                             index int64 [N] (position in the split, for
                             max_examples), formula and image_name str [N]
                             (format 2; decoding evaluation needs them)

The source yields the batches of the tf.data source: one key per batch, keys
drawn by core.key_schedule (so the step -> shape sequence is identical on every
host, and on resume), and evaluation walks keys in order, padding each key's
last batch (core.pad_batch). Only the order of examples *within* a key differs
(a seeded permutation per epoch instead of tf.data's shuffle buffer).

Nothing here imports TensorFlow; the exporter lives in input_pipeline.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Iterator

import numpy as np

from im2latex_jax.data import core
from im2latex_jax.data import vocab as vocab_lib

Keys = core.Keys
INDEX_FILENAME = "index.json"
FORMAT_VERSION = 2
# Examples per .npz file at export (bounds the exporter's memory).
EXAMPLES_PER_FILE = 4096
_ARRAYS = ("image", "image_hw", "tokens", "index")


# ------------------------------------------------------------------- source
@dataclasses.dataclass
class Split:
  """One split in memory, per key: arrays in split order."""
  counts: np.ndarray                       # [num_keys + 1], last = dropped
  arrays: dict[int, dict[str, np.ndarray]]  # key -> image/image_hw/tokens/index[/strings]


@dataclasses.dataclass
class ShardSource:
  """A core.DataSource over splits held in memory (from `load` or `fake`)."""
  vocab: vocab_lib.Vocab
  keys: Keys
  splits: dict[str, Split]
  train_split: str = "train"
  process_index: int = 0
  process_count: int = 1

  @property
  def train_counts(self) -> np.ndarray:
    return self.splits[self.train_split].counts

  @property
  def num_train(self) -> int:
    if self.train_split not in self.splits:
      return 0
    return int(self.train_counts[:-1].sum())

  @property
  def split_names(self) -> tuple[str, ...]:
    return tuple(sorted(self.splits))

  def has_split(self, split: str) -> bool:
    return split in self.splits

  def train_iterator(self, *, global_batch_size: int, seed: int,
                     start_step: int = 0) -> Iterator[core.Batch]:
    """Endless iterator of this host's numpy batches, one key per batch."""
    local_bs = global_batch_size // self.process_count
    counts = self.train_counts
    act = core.train_keys(counts, local_bs, self.process_count)
    weights = counts[act]
    split = self.splits[self.train_split]
    local = [_host_slice(split.arrays[k], self.process_index, self.process_count)
             for k in act]
    consumed = core.consumed_per_key(seed, weights, start_step)
    pos = consumed * local_bs  # next example position in each key's endless stream

    def take(i: int) -> core.Batch:
      a = local[i]
      n = len(a["tokens"])
      idx = np.empty(local_bs, np.int64)
      for j in range(local_bs):
        epoch, r = divmod(int(pos[i]) + j, n)
        idx[j] = _perm(seed, i, epoch, n)[r]
      pos[i] += local_bs
      return {"image": a["image"][idx], "image_hw": a["image_hw"][idx],
              "tokens": a["tokens"][idx], "weight": np.ones(local_bs, np.float32)}

    step = start_step
    while True:
      for i in core.key_schedule(seed, weights, step, core.SCHEDULE_BLOCK):
        yield take(int(i))
      step += core.SCHEDULE_BLOCK

  def eval_batches(self, split: str, *, global_batch_size: int,
                   with_strings: bool = False,
                   max_examples: int | None = None) -> Iterator[core.Batch]:
    """Every example of `split` once, keys in order, last batch of a key padded."""
    if split not in self.splits:
      raise ValueError(f"Split {split!r} is not in these shards; they have "
                       f"{list(self.split_names)}.")
    local_bs = global_batch_size // self.process_count
    per_key = {}
    for k, a in sorted(self.splits[split].arrays.items()):
      if with_strings and not all(f in a for f in core.STRING_FIELDS):
        raise ValueError("These shards hold no formula strings (exported before format "
                         f"{FORMAT_VERSION}); decoding evaluation needs them: export again.")
      if max_examples:
        a = {n: v[a["index"] < max_examples] for n, v in a.items()}
      per_key[k] = a
    per_host = np.array([[len(_host_slice(a, p, self.process_count)["tokens"])
                          for a in per_key.values()] for p in range(self.process_count)])
    n_batches = core.eval_batch_counts(per_host, local_bs) if per_key else []
    return self._eval_iter(per_key, n_batches, local_bs, with_strings)

  def _eval_iter(self, per_key, n_batches, local_bs, with_strings):
    fields = ["image", "image_hw", "tokens"] + (list(core.STRING_FIELDS) if with_strings else [])
    for (k, a), nb in zip(per_key.items(), n_batches):
      a = _host_slice(a, self.process_index, self.process_count)
      n = len(a["tokens"])
      padded = core.pad_batch(self.keys.key_shape(k), int(nb * local_bs) - n, with_strings)
      full = {f: np.concatenate([np.asarray(a[f], padded[f].dtype), padded[f]])
              for f in fields}
      full["weight"] = np.concatenate([np.ones(n, np.float32), padded["weight"]])
      for b in range(int(nb)):
        sl = slice(b * local_bs, (b + 1) * local_bs)
        yield {f: v[sl] for f, v in full.items()}


def load(shards_dir: str, splits: tuple[str, ...] | None = None, *,
         process_index: int = 0, process_count: int = 1) -> ShardSource:
  """Reads a shards dir written by ShardWriter (all splits, or those named)."""
  shards_dir = os.path.abspath(os.path.expanduser(shards_dir))
  path = os.path.join(shards_dir, INDEX_FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: {shards_dir} is not a shards dir. Write one with "
        "`im2latex-jax shards export --config CONFIG --out DIR`.")
  with open(path) as f:
    index = json.load(f)
  keys = Keys(tuple(tuple(b) for b in index["image_buckets"]), tuple(index["token_buckets"]))
  vocab = vocab_lib.Vocab.load(os.path.join(shards_dir, vocab_lib.VOCAB_FILENAME))
  out = {}
  for name, s in index["splits"].items():
    if splits is not None and name not in splits:
      continue
    arrays = {}
    for key, files in s["files"].items():
      parts = [np.load(os.path.join(shards_dir, f)) for f in files]
      fields = [f for f in _ARRAYS + core.STRING_FIELDS if all(f in p for p in parts)]
      arrays[int(key)] = {k: np.concatenate([p[k] for p in parts]) for k in fields}
    out[name] = Split(np.asarray(s["counts"], np.int64), arrays)
  return ShardSource(vocab, keys, out, index.get("train_split", "train"),
                     process_index, process_count)


class ShardWriter:
  """Writes a shards dir: `add` examples per split (in split order), `close`."""

  def __init__(self, out_dir: str, keys: Keys, vocab: vocab_lib.Vocab, train_split: str):
    self.out_dir, self.keys = out_dir, keys
    os.makedirs(out_dir, exist_ok=True)
    vocab.save(os.path.join(out_dir, vocab_lib.VOCAB_FILENAME))
    self.index = {"format": FORMAT_VERSION,
                  "image_buckets": [list(b) for b in keys.image_buckets],
                  "token_buckets": list(keys.token_buckets), "train_split": train_split,
                  "splits": {}}
    self._pending: dict[tuple[str, int], list] = {}

  @staticmethod
  def folder(split: str) -> str:
    # Split strings may hold slices ('train+validation[:7475]'): a safe folder name.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", split).strip("_")

  def _entry(self, split: str) -> dict:
    return self.index["splits"].setdefault(split, {"counts": None, "files": {}})

  def add(self, split: str, index: int, key: int, example: dict) -> None:
    """One example (image, image_hw, tokens, formula, image_name) of `key`."""
    entry = self._entry(split)
    rows = self._pending.setdefault((split, key), [])
    rows.append((index, example))
    if len(rows) >= EXAMPLES_PER_FILE:
      self._flush(split, key, entry)

  def set_counts(self, split: str, counts: np.ndarray) -> None:
    """Examples per key of the split, the dropped ones last."""
    self._entry(split)["counts"] = [int(c) for c in counts]

  def _flush(self, split: str, key: int, entry: dict) -> None:
    rows = self._pending.pop((split, key))
    folder = self.folder(split)
    os.makedirs(os.path.join(self.out_dir, folder), exist_ok=True)
    name = os.path.join(folder, f"k{key:03d}_{len(entry['files'].get(str(key), [])):04d}.npz")
    text = lambda f: np.array([_str(r[1][f]) for r in rows], dtype=str)  # pylint: disable=unnecessary-lambda-assignment
    np.savez_compressed(
        os.path.join(self.out_dir, name),
        image=np.stack([r[1]["image"] for r in rows]),
        image_hw=np.stack([r[1]["image_hw"] for r in rows]).astype(np.int32),
        tokens=np.stack([r[1]["tokens"] for r in rows]).astype(np.int32),
        index=np.array([r[0] for r in rows], np.int64),
        formula=text("formula"), image_name=text("image_name"))
    entry["files"].setdefault(str(key), []).append(name)

  def close(self) -> dict:
    for split, key in sorted(self._pending):
      self._flush(split, key, self._entry(split))
    with open(os.path.join(self.out_dir, INDEX_FILENAME), "w") as f:
      json.dump(self.index, f, indent=1)
    return self.index


def _str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def fake(cfg, seed: int = 0) -> ShardSource:
  """Random formula-like data in numpy: config.input.fake.{examples_per_key, vocab_size}.

  Every key of the grid gets `examples_per_key` examples of its full bucket
  size (so the step shapes are exactly the buckets); a 'validation' split with
  a quarter as many is made too. Formulas are the tokens' strings.
  """
  keys = core.make_keys(cfg)
  n = int(cfg.fake.examples_per_key)
  v = int(cfg.fake.vocab_size)
  vocab = vocab_lib.Vocab(list(vocab_lib.SPECIALS) + [f"t{i}" for i in range(4, v)])
  names = np.array(vocab.tokens, dtype=object)
  rng = np.random.default_rng(seed)
  splits = {}
  for name, count in (("train", n), ("validation", max(n // 4, 1))):
    arrays = {}
    for k in range(keys.num_keys()):
      h, w, t = keys.key_shape(k)
      # Dark "ink" specks on white, like a binarised formula.
      ink = rng.random((count, h, w, 1), np.float32) < 0.08
      image = np.where(ink, rng.integers(0, 96, (count, h, w, 1), np.uint8), 255).astype(np.uint8)
      lengths = rng.integers(max(1, (t - 2) // 2), t - 1, count)
      tokens = np.zeros((count, t), np.int32)
      tokens[:, 0] = vocab_lib.BOS
      body = rng.integers(len(vocab_lib.SPECIALS), v, (count, t - 2))
      pos = np.arange(t - 2)[None]
      tokens[:, 1:-1] = np.where(pos < lengths[:, None], body, vocab_lib.PAD)
      tokens[np.arange(count), lengths + 1] = vocab_lib.EOS
      index = np.arange(count, dtype=np.int64) + k * count
      arrays[k] = {"image": image, "image_hw": np.tile(np.array([[h, w]], np.int32), (count, 1)),
                   "tokens": tokens, "index": index,
                   "formula": np.array([" ".join(names[body[i, :lengths[i]]])
                                        for i in range(count)], dtype=str),
                   "image_name": np.array([f"fake_{i}.png" for i in index], dtype=str)}
    counts = np.array([count] * keys.num_keys() + [0], np.int64)
    splits[name] = Split(counts, arrays)
  return ShardSource(vocab, keys, splits)


def get_data(cfg, *, process_index: int = 0, process_count: int = 1) -> ShardSource:
  """config.input with loader 'shards' (reads shards_dir) or 'fake'."""
  loader = cfg.get("loader", "tfds")
  if loader == "shards":
    if not cfg.get("shards_dir"):
      raise ValueError("config.input.loader='shards' needs config.input.shards_dir.")
    data = load(cfg.shards_dir, process_index=process_index, process_count=process_count)
    want = core.make_keys(cfg)
    if want != data.keys:
      raise ValueError(
          f"{cfg.shards_dir} was exported for buckets {data.keys.image_buckets} and token "
          f"buckets {data.keys.token_buckets}, but the config asks for {want.image_buckets} "
          f"/ {want.token_buckets}; export again with this config.")
    return data
  if loader == "fake":
    data = fake(cfg)
    data.process_index, data.process_count = process_index, process_count
    return data
  raise ValueError(f"config.input.loader {loader!r} is not 'tfds', 'shards' or 'fake'.")


def _host_slice(a: dict[str, np.ndarray], process_index: int, process_count: int):
  n = len(a["tokens"])
  lo, hi = n * process_index // process_count, n * (process_index + 1) // process_count
  return {k: v[lo:hi] for k, v in a.items()}


_PERM_CACHE: dict[tuple[int, int, int, int], np.ndarray] = {}


def _perm(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
  key = (seed, stream, epoch, n)
  p = _PERM_CACHE.get(key)
  if p is None:
    if len(_PERM_CACHE) > 256:
      _PERM_CACHE.clear()
    p = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7919 * stream + 1, epoch]).permutation(n)
    _PERM_CACHE[key] = p
  return p
