"""A TensorFlow-free input path: bucketed numpy shards, and fake data.

Accelerator machines of this project have JAX but no TensorFlow (shared/
DESIGN.md). This module lets training run there:

  # where TensorFlow is installed: the tf.data pipeline's own key assignment
  python -m im2latex_jax.data.shards export --config configs/quickstart.py --out DIR
  # anywhere (no TensorFlow, no wandb): train from the shards
  python -m im2latex_jax.data.shards train --config configs/quickstart.py \
      --shards DIR --workdir W [--config.x=y ...]

`im2latex-jax train` reads them too when `config.input.loader == 'shards'`
(with `config.input.shards_dir`); `'fake'` generates random data in numpy
(configs/fake_bench.py).

Layout of a shards dir:
  index.json                 keys grid, per-split key counts and file lists
  vocab.txt                  the vocabulary the tokens were encoded with
  <split>/k<key>_<part>.npz  (split name made file-safe) image uint8 [N, H, W, 1] (padded to the key's
                             bucket), image_hw int32 [N, 2], tokens int32
                             [N, T] (BOS ids EOS PAD…), index int64 [N]
                             (position in the split, for max_examples)

The loader yields the same batches as data/input_pipeline.py: one key per
batch, keys drawn by the shared seeded schedule `key_schedule` (so the step →
shape sequence is identical to tf.data's, on every host, and on resume), and
evaluation walks keys in order, padding each key's last batch with
`weight == 0` examples. Only the order of examples *within* a key differs
(a seeded permutation per epoch instead of tf.data's shuffle buffer).

Nothing here imports TensorFlow except `export` (lazily).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from typing import Iterator

import numpy as np

from im2latex_jax.data import buckets as buckets_lib
from im2latex_jax.data import vocab as vocab_lib

Batch = dict[str, np.ndarray]
INDEX_FILENAME = "index.json"
FORMAT_VERSION = 1
# Steps per block of the key schedule; each block is one seeded numpy draw.
SCHEDULE_BLOCK = 4096
# Examples per .npz file at export (bounds the exporter's memory).
EXAMPLES_PER_FILE = 4096


# --------------------------------------------------------------------- keys
@dataclasses.dataclass(frozen=True)
class Keys:
  """The (image bucket, token bucket) grid and how to map examples onto it.

  Also used by the tf.data pipeline (input_pipeline.Keys is this class).
  """
  image_buckets: tuple[tuple[int, int], ...]
  token_buckets: tuple[int, ...]

  def key_shape(self, key: int) -> tuple[int, int, int]:
    """(H, W, T) of a key; T counts BOS and EOS."""
    ib, tb = divmod(key, len(self.token_buckets))
    h, w = self.image_buckets[ib]
    return h, w, self.token_buckets[tb] + 2

  def num_keys(self) -> int:
    return len(self.image_buckets) * len(self.token_buckets)


def make_keys(cfg) -> Keys:
  """Keys of config.input (buckets, token_buckets)."""
  token_buckets = tuple(sorted(int(t) for t in cfg.token_buckets))
  if not token_buckets or token_buckets[0] <= 0:
    raise ValueError(f"config.input.token_buckets must be positive lengths, got {cfg.token_buckets}")
  return Keys(buckets_lib.parse_buckets(cfg.buckets), token_buckets)


def active_keys(counts: np.ndarray, local_batch_size: int, process_count: int) -> list[int]:
  """Keys with a full batch of examples on every host (counts: per key + dropped)."""
  per_host = np.asarray(counts[:-1]) // process_count
  return [k for k in range(len(per_host)) if per_host[k] >= local_batch_size]


def key_schedule(seed: int, weights: np.ndarray, start: int, num: int) -> np.ndarray:
  """Which active key each step start..start+num-1 uses (indices into weights).

  A pure function of (seed, step): step s draws from block s // SCHEDULE_BLOCK,
  one `default_rng([seed, block])` stream, so every host and a resumed run get
  the same sequence. tf.data (input_pipeline) and the shard loader both use it.
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
                     process_count: int = 1) -> dict[str, int]:
  """Distinct (H, W, T) shapes the train step sees in one epoch of the schedule."""
  act = active_keys(counts, batch_size // process_count, process_count)
  steps = max(int(np.asarray(counts[:-1]).sum()) // batch_size, 1)
  sched = key_schedule(seed, np.asarray(counts)[act], 0, steps)
  seen = {act[i] for i in np.unique(sched)}
  return {"steps_per_epoch": steps, "active_keys": len(act),
          "distinct_shapes": len(seen),
          "shapes": sorted("%dx%d/T%d" % keys.key_shape(k) for k in seen)}


# --------------------------------------------------------------------- data
@dataclasses.dataclass
class Split:
  """One split in memory, per key: arrays in split order."""
  counts: np.ndarray                       # [num_keys + 1], last = dropped
  arrays: dict[int, dict[str, np.ndarray]]  # key -> image/image_hw/tokens/index


@dataclasses.dataclass
class ShardData:
  """What the trainer needs; the TF-free counterpart of input_pipeline.Data."""
  vocab: vocab_lib.Vocab
  keys: Keys
  splits: dict[str, Split]
  train_split: str = "train"

  @property
  def train_counts(self) -> np.ndarray:
    return self.splits[self.train_split].counts

  @property
  def num_train(self) -> int:
    return int(self.train_counts[:-1].sum())


def load(shards_dir: str, splits: tuple[str, ...] | None = None) -> ShardData:
  """Reads a shards dir written by `export` (all splits, or those named)."""
  shards_dir = os.path.abspath(os.path.expanduser(shards_dir))
  path = os.path.join(shards_dir, INDEX_FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: {shards_dir} is not a shards dir. Write one with "
        "`python -m im2latex_jax.data.shards export --config CONFIG --out DIR`.")
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
      arrays[int(key)] = {k: np.concatenate([p[k] for p in parts]) for k in
                          ("image", "image_hw", "tokens", "index")}
    out[name] = Split(np.asarray(s["counts"], np.int64), arrays)
  return ShardData(vocab, keys, out, index.get("train_split", "train"))


def fake(cfg, seed: int = 0) -> ShardData:
  """Random formula-like data in numpy: config.input.fake.{examples_per_key, vocab_size}.

  Every key of the grid gets `examples_per_key` examples of its full bucket
  size (so the step shapes are exactly the buckets); a 'validation' split with
  a quarter as many is made too.
  """
  keys = make_keys(cfg)
  n = int(cfg.fake.examples_per_key)
  v = int(cfg.fake.vocab_size)
  vocab = vocab_lib.Vocab(list(vocab_lib.SPECIALS) + [f"t{i}" for i in range(4, v)])
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
      arrays[k] = {"image": image, "image_hw": np.tile(np.array([[h, w]], np.int32), (count, 1)),
                   "tokens": tokens, "index": np.arange(count, dtype=np.int64) + k * count}
    counts = np.array([count] * keys.num_keys() + [0], np.int64)
    splits[name] = Split(counts, arrays)
  return ShardData(vocab, keys, splits)


def get_data(cfg) -> ShardData:
  """config.input with loader 'shards' (reads shards_dir) or 'fake'."""
  loader = cfg.get("loader", "tfds")
  if loader == "shards":
    if not cfg.get("shards_dir"):
      raise ValueError("config.input.loader='shards' needs config.input.shards_dir.")
    data = load(cfg.shards_dir)
    want = make_keys(cfg)
    if want != data.keys:
      raise ValueError(
          f"{cfg.shards_dir} was exported for buckets {data.keys.image_buckets} and token "
          f"buckets {data.keys.token_buckets}, but the config asks for {want.image_buckets} "
          f"/ {want.token_buckets}; export again with this config.")
    return data
  if loader == "fake":
    return fake(cfg)
  raise ValueError(f"config.input.loader {loader!r} is not 'tfds', 'shards' or 'fake'.")


# ------------------------------------------------------------------ batches
def _host_slice(a: dict[str, np.ndarray], process_index: int, process_count: int):
  n = len(a["tokens"])
  lo, hi = n * process_index // process_count, n * (process_index + 1) // process_count
  return {k: v[lo:hi] for k, v in a.items()}


def train_iterator(data: ShardData, *, global_batch_size: int, seed: int,
                   start_step: int = 0, process_index: int = 0,
                   process_count: int = 1) -> Iterator[Batch]:
  """Infinite iterator of this host's numpy batches, one key per batch."""
  local_bs = global_batch_size // process_count
  counts = data.train_counts
  act = active_keys(counts, local_bs, process_count)
  if not act:
    raise ValueError(
        f"No bucket holds {local_bs} training examples per host (counts "
        f"{dict(enumerate(counts[:-1].tolist()))}); lower config.input.batch_size or "
        "use coarser config.input.token_buckets.")
  weights = counts[act]
  split = data.splits[data.train_split]
  local = [_host_slice(split.arrays[k], process_index, process_count) for k in act]
  consumed = consumed_per_key(seed, weights, start_step)
  pos = consumed * local_bs  # next example position in each key's endless stream

  def take(i: int) -> Batch:
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
    for i in key_schedule(seed, weights, step, SCHEDULE_BLOCK):
      yield take(int(i))
    step += SCHEDULE_BLOCK


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


def eval_batches(data: ShardData, split: str, *, global_batch_size: int,
                 max_examples: int | None = None, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Batch]:
  """Every example of `split` once, keys in order, last batch of a key padded."""
  if split not in data.splits:
    raise ValueError(f"Split {split!r} is not in these shards; they have {sorted(data.splits)}.")
  local_bs = global_batch_size // process_count
  s = data.splits[split]
  per_key = {}
  for k, a in sorted(s.arrays.items()):
    if max_examples:
      a = {n: v[a["index"] < max_examples] for n, v in a.items()}
    per_key[k] = a
  # The same number of batches per key on every host.
  n_batches = {k: -(-max(len(_host_slice(a, p, process_count)["tokens"])
                         for p in range(process_count)) // local_bs)
               for k, a in per_key.items()}
  for k, a in per_key.items():
    a = _host_slice(a, process_index, process_count)
    h, w, t = data.keys.key_shape(k)
    n = len(a["tokens"])
    total = n_batches[k] * local_bs
    image = np.full((total, h, w, 1), 255, np.uint8)
    image[:n] = a["image"]
    image_hw = np.tile(np.array([[h, w]], np.int32), (total, 1))
    image_hw[:n] = a["image_hw"]
    tokens = np.zeros((total, t), np.int32)
    tokens[:n] = a["tokens"]
    weight = (np.arange(total) < n).astype(np.float32)
    for b in range(n_batches[k]):
      sl = slice(b * local_bs, (b + 1) * local_bs)
      yield {"image": image[sl], "image_hw": image_hw[sl], "tokens": tokens[sl],
             "weight": weight[sl]}


# ------------------------------------------------------------------- export
def export(cfg, out_dir: str, splits: tuple[str, ...] | None = None,
           max_examples: int | None = None) -> dict:
  """Writes config.input's splits as shards, with tf.data's key assignment.

  Args:
    cfg: config.input (uses TFDS and TensorFlow, imported here).
    out_dir: created if missing.
    splits: default (train_split, eval_split).
    max_examples: export only the first N examples of each split.

  Returns:
    the index written to out_dir/index.json.
  """
  from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  tf = input_pipeline._tf()  # pylint: disable=protected-access
  data = input_pipeline.get_data(cfg, need_train=False)
  keys = data.keys
  splits = splits or (cfg.train_split, cfg.eval_split)
  os.makedirs(out_dir, exist_ok=True)
  data.vocab.save(os.path.join(out_dir, vocab_lib.VOCAB_FILENAME))
  index = {"format": FORMAT_VERSION, "image_buckets": [list(b) for b in keys.image_buckets],
           "token_buckets": list(keys.token_buckets), "train_split": cfg.train_split,
           "splits": {}}
  for split in splits:
    input_pipeline.check_split(data.builder, split)
    sub = split if not max_examples else f"{split}[:{int(max_examples)}]"
    train = split == cfg.train_split
    max_hw, max_tokens = input_pipeline._filter_args(cfg, train=train)  # pylint: disable=protected-access
    key_fn = input_pipeline._key_fn(tf, keys, max_hw, max_tokens)  # pylint: disable=protected-access
    example_fn = input_pipeline._example_fn(tf, keys, data.vocab, key_fn, keep_strings=False)  # pylint: disable=protected-access
    ds = data.builder.as_dataset(split=sub, shuffle_files=False,
                                 decoders=input_pipeline._skip_decoding())  # pylint: disable=protected-access
    ds = ds.enumerate().map(lambda n, ex: (n, key_fn(ex["image"], ex["formula"]), ex))
    counts = np.zeros(keys.num_keys() + 1, np.int64)
    for _, k, _ in ds.map(lambda n, k, ex: (n, k, 0)).as_numpy_iterator():
      counts[k] += 1  # -1 (dropped) lands in the last slot
    ds = ds.filter(lambda n, k, ex: k >= 0).map(
        lambda n, k, ex: (n, example_fn(ex)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    # Split strings may hold slices ('train+validation[:7475]'): a safe folder name.
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", split).strip("_")
    os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    pending: dict[int, list] = {}
    files: dict[str, list[str]] = {}

    def flush(k):
      rows = pending.pop(k)
      name = os.path.join(folder, f"k{k:03d}_{len(files.get(str(k), [])):04d}.npz")
      np.savez_compressed(
          os.path.join(out_dir, name),
          image=np.stack([r[1]["image"] for r in rows]),
          image_hw=np.stack([r[1]["image_hw"] for r in rows]).astype(np.int32),
          tokens=np.stack([r[1]["tokens"] for r in rows]).astype(np.int32),
          index=np.array([r[0] for r in rows], np.int64))
      files.setdefault(str(k), []).append(name)

    for n, ex in ds.as_numpy_iterator():
      k = int(ex["key"])
      pending.setdefault(k, []).append((int(n), ex))
      if len(pending[k]) >= EXAMPLES_PER_FILE:
        flush(k)
    for k in sorted(pending):
      flush(k)
    index["splits"][split] = {"counts": counts.tolist(), "files": files}
  with open(os.path.join(out_dir, INDEX_FILENAME), "w") as f:
    json.dump(index, f, indent=1)
  return index


# ---------------------------------------------------------------------- CLI
USAGE = """usage:
  python -m im2latex_jax.data.shards export --config CONFIG[:arg] --out DIR
      [--splits train,validation] [--max_examples N] [--config.x=y ...]
  python -m im2latex_jax.data.shards train --config CONFIG[:arg] --shards DIR
      --workdir W [--config.x=y ...]
"""


def _load_config(argv, extra_flags):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv,
                                  lock_config=True, sys_argv=argv)
  for name, default in extra_flags.items():
    flags.DEFINE_string(name, default, name, flag_values=fv)
  fv(argv)
  if fv.config is None:
    raise SystemExit("--config is required.\n" + USAGE)
  return fv.config, fv


def main(argv: list[str]) -> int:
  if len(argv) < 2 or argv[1] not in ("export", "train"):
    sys.stderr.write(USAGE)
    return 2
  cmd, rest = argv[1], [argv[0]] + argv[2:]
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  if cmd == "export":
    cfg, fv = _load_config(rest, {"out": None, "splits": "", "max_examples": ""})
    if not fv.out:
      raise SystemExit("--out is required.\n" + USAGE)
    splits = tuple(s for s in fv.splits.split(",") if s) or None
    index = export(cfg.input, fv.out, splits,
                   int(fv.max_examples) if fv.max_examples else None)
    for name, s in index["splits"].items():
      print(f"{name}: {sum(s['counts'][:-1])} examples in {len(s['files'])} keys "
            f"({s['counts'][-1]} outside the buckets/filter)")
    print(f"wrote {os.path.abspath(fv.out)}")
    return 0
  cfg, fv = _load_config(rest, {"shards": None, "workdir": None})
  if not fv.shards or not fv.workdir:
    raise SystemExit("--shards and --workdir are required.\n" + USAGE)
  with cfg.unlocked():
    cfg.input.loader = "shards"
    cfg.input.shards_dir = os.path.abspath(fv.shards)
  from im2latex_jax import train  # pylint: disable=g-import-not-at-top
  final = train.train_and_evaluate(cfg, fv.workdir)
  print(json.dumps(final, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
