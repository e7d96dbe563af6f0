"""What every data source gives the trainer, and the rules they share.

A *data source* (`DataSource`) is the trainer's one view of the data; three
implement it: tf.data over TFDS (`input_pipeline.TfdsSource`), numpy shards
and fake data (`shards.ShardSource`), and batches held in memory
(`BatchSource`, for tests and notebooks). `sources.get_data(config.input)`
picks one from `config.input.loader`.

Below every source, and defined only here:

- the key grid: every example has a *key* = (image bucket, token bucket), and a
  batch holds one key, so the compiled step sees one shape per key (`Keys`);
- the key schedule: which key step s trains on, a pure function of (seed, s)
  weighted by the examples per key of the whole split, so every host, every
  source and a resumed run agree (`key_schedule`, `consumed_per_key`);
- which keys train (`active_keys`: a full batch on every host);
- evaluation padding: keys in order, each key's last batch filled with
  `weight == 0` examples, the same number of batches per key on every host
  (`eval_batch_counts`, `pad_batch`);
- split slicing for a first-N evaluation (`limit_split`).

A batch is a dict of numpy arrays: image uint8 [B, H, W, 1] (white-padded),
image_hw int32 [B, 2] (true size), tokens int32 [B, T] (BOS ids EOS PAD...),
weight float32 [B] (0 = padding); with strings also formula and image_name
(str or bytes [B]).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from im2latex_jax.data import buckets as buckets_lib
from im2latex_jax.data import vocab as vocab_lib

Batch = dict[str, Any]
# Steps per block of the key schedule; each block is one seeded numpy draw.
SCHEDULE_BLOCK = 4096
STRING_FIELDS = ("formula", "image_name")


# --------------------------------------------------------------------- keys
@dataclasses.dataclass(frozen=True)
class Keys:
  """The (image bucket, token bucket) grid; key = image index * T + token index."""
  image_buckets: tuple[tuple[int, int], ...]
  token_buckets: tuple[int, ...]

  def key_shape(self, key: int) -> tuple[int, int, int]:
    """(H, W, T) of a key; T counts BOS and EOS."""
    ib, tb = divmod(key, len(self.token_buckets))
    h, w = self.image_buckets[ib]
    return h, w, self.token_buckets[tb] + 2

  def num_keys(self) -> int:
    return len(self.image_buckets) * len(self.token_buckets)

  def shapes(self) -> list[tuple[int, int, int]]:
    return [self.key_shape(k) for k in range(self.num_keys())]


def make_keys(cfg) -> Keys:
  """Keys of config.input (buckets, token_buckets)."""
  token_buckets = tuple(sorted(int(t) for t in cfg.token_buckets))
  if not token_buckets or token_buckets[0] <= 0:
    raise ValueError(f"config.input.token_buckets must be positive lengths, got {cfg.token_buckets}")
  return Keys(buckets_lib.parse_buckets(cfg.buckets), token_buckets)


def describe_counts(keys: Keys, counts: np.ndarray) -> str:
  """One entry per non-empty key: shape and count (for the log)."""
  return ", ".join("%dx%d/T%d:%d" % (*keys.key_shape(int(k)), int(counts[k]))
                   for k in np.flatnonzero(np.asarray(counts)[:-1]))


# ----------------------------------------------------------------- schedule
def active_keys(counts: np.ndarray, local_batch_size: int, process_count: int) -> list[int]:
  """Keys with a full batch of examples on every host (counts: per key + dropped)."""
  per_host = np.asarray(counts[:-1]) // process_count
  return [k for k in range(len(per_host)) if per_host[k] >= local_batch_size]


def train_keys(counts: np.ndarray, local_batch_size: int, process_count: int) -> list[int]:
  """active_keys, or a ValueError saying what to change when there is none."""
  act = active_keys(counts, local_batch_size, process_count)
  if not act:
    raise ValueError(
        f"No bucket holds {local_batch_size} training examples per host (counts "
        f"{dict(enumerate(np.asarray(counts[:-1]).tolist()))}); lower "
        "config.input.batch_size or use coarser config.input.token_buckets.")
  return act


def key_schedule(seed: int, weights: np.ndarray, start: int, num: int) -> np.ndarray:
  """Which active key each step start..start+num-1 uses (indices into weights).

  A pure function of (seed, step): step s draws from block s // SCHEDULE_BLOCK,
  one `default_rng([seed, block])` stream, so every host and a resumed run get
  the same sequence, whichever source reads the examples.
  """
  p = np.asarray(weights, np.float64)
  cum = np.cumsum(p / p.sum())
  cum[-1] = 1.0
  steps = np.arange(start, start + num, dtype=np.int64)
  out = np.empty(num, np.int64)
  blocks = steps // SCHEDULE_BLOCK
  for b in np.unique(blocks):
    u = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(b)]).random(SCHEDULE_BLOCK)
    sel = blocks == b
    out[sel] = np.searchsorted(cum, u[steps[sel] % SCHEDULE_BLOCK], side="right")
  return np.minimum(out, len(p) - 1)


def consumed_per_key(seed: int, weights: np.ndarray, start_step: int) -> np.ndarray:
  """How many batches each active key gave in steps [0, start_step)."""
  consumed = np.zeros(len(weights), np.int64)
  for s in range(0, start_step, 1 << 16):
    n = min(1 << 16, start_step - s)
    consumed += np.bincount(key_schedule(seed, weights, s, n), minlength=len(weights))
  return consumed


def shapes_per_epoch(keys: Keys, counts: np.ndarray, batch_size: int, seed: int,
                     process_count: int = 1) -> dict[str, Any]:
  """Distinct (H, W, T) shapes the train step sees in one epoch of the schedule."""
  act = active_keys(counts, batch_size // process_count, process_count)
  steps = max(int(np.asarray(counts[:-1]).sum()) // batch_size, 1)
  sched = key_schedule(seed, np.asarray(counts)[act], 0, steps)
  seen = {act[i] for i in np.unique(sched)}
  return {"steps_per_epoch": steps, "active_keys": len(act),
          "distinct_shapes": len(seen),
          "shapes": sorted("%dx%d/T%d" % keys.key_shape(k) for k in seen)}


# --------------------------------------------------------------- evaluation
def eval_batch_counts(per_host_counts: np.ndarray, local_batch_size: int) -> np.ndarray:
  """Batches per key, the same on every host: ceil(largest host's count / B).

  per_host_counts: [hosts, keys] (or [hosts, keys + 1] with the dropped last).
  """
  c = np.asarray(per_host_counts)
  return -(-c.max(axis=0) // local_batch_size)


def pad_batch(shape: tuple[int, int, int], n: int, with_strings: bool = False) -> Batch:
  """`n` padding examples of a key's (H, W, T): white, weight 0."""
  h, w, t = shape
  out = {"image": np.full((n, h, w, 1), 255, np.uint8),
         "image_hw": np.tile(np.array([[h, w]], np.int32), (n, 1)),
         "tokens": np.zeros((n, t), np.int32), "weight": np.zeros(n, np.float32)}
  if with_strings:
    out.update({f: np.full(n, "", object) for f in STRING_FIELDS})
  return out


# Integer slices `[a:b]` of a TFDS split that `limit_split` can shorten exactly.
_INT_SLICE_RE = re.compile(r"^(?P<base>[^\[]+)\[(?P<a>\d*):(?P<b>\d*)\]$")


def limit_split(split: str, max_examples: int | None) -> tuple[str, int | None]:
  """The first `max_examples` examples of `split`, in split order.

  Returns (split, leftover limit): the split rewritten to a slice when that is
  exact (a plain split or an integer slice `[a:b]`), else the split unchanged
  and the limit, which the consumer applies to its output (`decode_split`).
  """
  if not max_examples:
    return split, None
  n = int(max_examples)
  if "[" not in split:
    return f"{split}[:{n}]", None
  m = _INT_SLICE_RE.match(split)
  if m is None:
    return split, n
  a = int(m["a"] or 0)
  b = a + n if not m["b"] else min(int(m["b"]), a + n)
  return f"{m['base']}[{a}:{b}]", None


# -------------------------------------------------------------- the interface
class DataSource(Protocol):
  """The trainer's view of the data; every loader implements it.

  Attributes:
    vocab: the vocabulary the tokens are encoded with.
    keys: the bucket grid (None when the batches come ready-made).
    num_train: training examples that fit the buckets (for epoch lengths).
    split_names: the splits it holds (for error messages; tfds also reads
      slices and joins of them, so ask `has_split`).
  """
  vocab: vocab_lib.Vocab
  keys: Keys | None
  num_train: int
  split_names: tuple[str, ...]

  def has_split(self, split: str) -> bool:
    """Whether `eval_batches(split)` can be read."""

  def train_iterator(self, *, global_batch_size: int, seed: int,
                     start_step: int = 0) -> Iterator[Batch]:
    """This host's batches for steps start_step, start_step + 1, ... (endless);
    the same batches an uninterrupted run would see from that step on."""

  def eval_batches(self, split: str, *, global_batch_size: int,
                   with_strings: bool = False,
                   max_examples: int | None = None) -> Iterable[Batch]:
    """This host's batches holding every example of `split` once (at least its
    first `max_examples`), padded per key; a fresh iterable on each call.
    With `with_strings`, batches also hold 'formula' and 'image_name'."""


@dataclasses.dataclass
class BatchSource:
  """A DataSource from batches you already have (tests, notebooks).

  train: an iterator of batches (consumed once, start_step must match where
  it is); eval: split name -> a callable returning that split's batches.
  """
  vocab: vocab_lib.Vocab
  train: Iterator[Batch] | None = None
  eval: dict[str, Callable[[], Iterable[Batch]]] = dataclasses.field(default_factory=dict)
  num_train: int = 0
  keys: Keys | None = None

  @property
  def split_names(self) -> tuple[str, ...]:
    return tuple(sorted(self.eval))

  def has_split(self, split: str) -> bool:
    return split in self.eval

  def train_iterator(self, *, global_batch_size: int, seed: int,
                     start_step: int = 0) -> Iterator[Batch]:
    del global_batch_size, seed, start_step
    if self.train is None:
      raise ValueError("This BatchSource has no training batches.")
    return self.train

  def eval_batches(self, split: str, *, global_batch_size: int,
                   with_strings: bool = False,
                   max_examples: int | None = None) -> Iterable[Batch]:
    del global_batch_size, max_examples
    if split not in self.eval:
      raise ValueError(f"Split {split!r} is not in this source; it has {list(self.split_names)}.")
    batches = self.eval[split]()
    if with_strings:
      batches = list(batches)
      if batches and not all(f in batches[0] for f in STRING_FIELDS):
        raise ValueError(f"The batches of split {split!r} hold no formula strings; "
                         "decoding evaluation needs 'formula' and 'image_name'.")
    return batches
