"""tf.data input pipeline with exact size bucketing, sharded per host.

Every example is assigned a *key*: (image bucket, token-length bucket). A
batch only ever holds one key, so the compiled step sees one fixed shape per
key and nothing else:

- image: the smallest configured (H, W) bucket that holds the image, padded
  with white on the bottom/right (im2markup's processed images are already
  bucket-sized, so this is a no-op for the official data);
- tokens: `BOS ids EOS` padded with PAD to the token bucket length + 2.

Training draws the key of each step from one seeded categorical stream,
weighted by how many examples each key holds in the *whole* split. Every host
computes the same weights and the same stream, so all hosts agree on the batch
shape of every step (needed for multi-host `jit`), while each reads only its
own slice of the examples (`tfds.split_for_jax_process`).

Evaluation walks the keys in a fixed order and pads the last batch of each key
with masked examples (`weight == 0`), so every example counts exactly once and
the number of batches per key is the same on every host.

`TfdsSource` is this pipeline's core.DataSource; the key grid, key schedule
and padding rules it applies are data/core.py's, shared with the TF-free
source (data/shards.py), whose files `export_shards` writes from here.
TensorFlow is imported lazily.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np

from im2latex_jax import console
from im2latex_jax.data import core
from im2latex_jax.data import layout
from im2latex_jax.data import shards
from im2latex_jax.data import vocab as vocab_lib

EMBEDDED_DIR = os.path.join(os.path.dirname(__file__), "embedded")


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # TensorFlow must never take an accelerator from JAX.
  tf.config.set_visible_devices([], "GPU")
  return tf


def resolve_manual_dir(manual_dir: str | None) -> str | None:
  if manual_dir in (None, "", "none", "None"):
    return None
  if manual_dir == "embedded":
    return EMBEDDED_DIR
  return os.path.abspath(os.path.expanduser(manual_dir))


def _data_dir(cfg: ml_collections.ConfigDict, manual: str | None) -> str:
  """Where TFDS prepares this source; one folder per source dir content."""
  if cfg.get("data_dir"):
    return os.path.abspath(os.path.expanduser(cfg.data_dir))
  root = os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
  if manual is None:
    return root
  import hashlib  # pylint: disable=g-import-not-at-top
  from im2latex_jax.data import im2latex100k  # pylint: disable=g-import-not-at-top
  # Keyed on the content and the builder version, not only the path: a source
  # dir whose files were fixed (or replaced) is prepared again.
  key = "\0".join([manual, layout.source_fingerprint(manual),
                    str(im2latex100k.Im2latex100k.VERSION)])
  tag = hashlib.sha1(key.encode()).hexdigest()[:12]
  return os.path.join(root, "im2latex_jax_sources", f"{os.path.basename(manual)}-{tag}")


def get_builder(cfg: ml_collections.ConfigDict):
  """Builds (once) and returns the TFDS builder for `cfg.manual_dir`."""
  with console.quiet():  # TensorFlow's C++ start-up lines
    _tf()
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from im2latex_jax.data import im2latex100k  # pylint: disable=g-import-not-at-top,unused-import
  if not console.is_verbose():
    tfds.disable_progress_bar()

  manual = resolve_manual_dir(cfg.get("manual_dir"))
  if manual is not None:
    im2latex100k.check_data_dir(manual)
  builder = tfds.builder("im2latex100k", data_dir=_data_dir(cfg, manual))
  if jax.process_index() == 0 or not builder.is_prepared():
    if not builder.is_prepared():
      logging.info("Preparing the dataset from %s once (TFDS, cached in %s)...",
                   manual or "the official download", builder.data_dir)
    start = time.time()
    with console.quiet():  # TFDS's own prints
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual))
    if time.time() - start > 1:
      logging.info("Dataset ready (%.0f s).", time.time() - start)
  return builder


def check_split(builder, split: str) -> None:
  # TFDS split strings may join slices: 'train+validation[:7475]'.
  bases = [part.strip().split("[")[0] for part in split.split("+")]
  if any(base not in builder.info.splits for base in bases):
    raise ValueError(
        f"Split {split!r} is not in this dataset; it has "
        f"{sorted(builder.info.splits.keys())}. The test split is only in the "
        "official release; pass one of those or another data dir.")


Keys = core.Keys
make_keys = core.make_keys
describe_counts = core.describe_counts


def _png_hw(tf, png):
  """(height, width) from a PNG header, without decoding the pixels."""
  raw = tf.io.decode_raw(tf.strings.substr(png, 16, 8), tf.uint8)
  raw = tf.cast(raw, tf.int32)
  w = raw[0] * 16777216 + raw[1] * 65536 + raw[2] * 256 + raw[3]
  h = raw[4] * 16777216 + raw[5] * 65536 + raw[6] * 256 + raw[7]
  return h, w


def _key_fn(tf, keys: Keys, max_hw: tuple[int, int] | None, max_tokens: int | None):
  """Returns f(png, formula) -> int32 key, or -1 when filtered/unbucketable."""
  bh = tf.constant([b[0] for b in keys.image_buckets])
  bw = tf.constant([b[1] for b in keys.image_buckets])
  tb = tf.constant(keys.token_buckets)
  max_h = max_hw[0] if max_hw else 1 << 30
  max_w = max_hw[1] if max_hw else 1 << 30
  max_t = max_tokens if max_tokens else 1 << 30

  def key(png, formula):
    h, w = _png_hw(tf, png)
    n = tf.size(tf.strings.split(formula))
    fits_img = tf.logical_and(bh >= h, bw >= w)  # buckets sorted by area
    fits_tok = tb >= n
    ok = (tf.reduce_any(fits_img) & tf.reduce_any(fits_tok) &
          (h <= max_h) & (w <= max_w) & (n <= max_t))
    ib = tf.argmax(tf.cast(fits_img, tf.int32), output_type=tf.int32)
    ti = tf.argmax(tf.cast(fits_tok, tf.int32), output_type=tf.int32)
    return tf.where(ok, ib * len(keys.token_buckets) + ti, -1)
  return key


def _filter_args(cfg, train: bool):
  f = cfg.filter if train else cfg.eval_filter
  if not f.enabled:
    return None, None
  return (f.max_height, f.max_width), f.max_tokens


def count_keys(builder, split: str, keys: Keys, max_hw, max_tokens) -> np.ndarray:
  """Examples per key (index -1 = dropped, stored last), reading headers only."""
  tf = _tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()},
                          shuffle_files=False)
  key = _key_fn(tf, keys, max_hw, max_tokens)
  ds = ds.map(lambda ex: key(ex["image"], ex["formula"]),
              num_parallel_calls=tf.data.AUTOTUNE)
  counts = np.zeros(keys.num_keys() + 1, np.int64)
  for batch in ds.batch(4096).as_numpy_iterator():
    np.add.at(counts, batch, 1)  # -1 lands in the last slot.
  return counts


def load_vocab(builder, cfg) -> vocab_lib.Vocab:
  """im2markup's vocabulary: training tokens seen at least min_count times."""
  tf = _tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  split = cfg.vocab_split
  check_split(builder, split)
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(lambda ex: ex["formula"], num_parallel_calls=tf.data.AUTOTUNE)
  formulas = (f.decode() for batch in ds.batch(4096).as_numpy_iterator() for f in batch)
  return vocab_lib.Vocab.build(formulas, min_count=cfg.vocab_min_count)


def _example_fn(tf, keys: Keys, vocab: vocab_lib.Vocab, key_fn, keep_strings: bool):
  """Decodes one example and pads it onto its key's shapes."""
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(vocab.tokens), tf.range(len(vocab), dtype=tf.int32)),
      default_value=vocab_lib.UNK)
  shapes = tf.constant([keys.key_shape(k) for k in range(keys.num_keys())], tf.int32)

  def fn(ex):
    png, formula = ex["image"], ex["formula"]
    key = key_fn(png, formula)
    hwt = shapes[tf.maximum(key, 0)]
    image = tf.io.decode_png(png, channels=1)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    # Pad with white: pad_to_bounding_box pads with zeros, so pad the negative.
    image = 255 - tf.image.pad_to_bounding_box(255 - image, 0, 0, hwt[0], hwt[1])
    ids = table.lookup(tf.strings.split(formula))
    ids = tf.concat([[vocab_lib.BOS], ids, [vocab_lib.EOS]], 0)
    ids = tf.pad(ids, [[0, hwt[2] - tf.size(ids)]])
    out = {"image": image, "image_hw": tf.stack([h, w]), "tokens": ids,
           "weight": tf.constant(1.0), "key": key}
    if keep_strings:
      out["formula"] = formula
      out["image_name"] = ex["image_name"]
    return out
  return fn


@dataclasses.dataclass
class TfdsSource:
  """core.DataSource over the TFDS builder of config.input, through tf.data."""
  builder: Any
  vocab: vocab_lib.Vocab
  keys: Keys
  train_counts: np.ndarray | None   # per key, whole split
  num_train: int
  cfg: ml_collections.ConfigDict | None = None
  _eval_cache: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def split_names(self) -> tuple[str, ...]:
    return tuple(sorted(self.builder.info.splits.keys()))

  def has_split(self, split: str) -> bool:
    try:
      check_split(self.builder, split)
    except ValueError:
      return False
    return True

  def train_iterator(self, *, global_batch_size: int, seed: int,
                     start_step: int = 0) -> Iterator[core.Batch]:
    return create_train_iterator(self, self.cfg, global_batch_size=global_batch_size,
                                 seed=seed, start_step=start_step)

  def eval_batches(self, split: str, *, global_batch_size: int,
                   with_strings: bool = False, max_examples: int | None = None):
    # The dataset is built once per request kind: building counts every
    # host's examples per key, which a re-iteration need not repeat.
    key = (split, global_batch_size, with_strings, max_examples)
    if key not in self._eval_cache:
      self._eval_cache[key] = create_eval_dataset(
          self, self.cfg, split, global_batch_size=global_batch_size,
          keep_strings=with_strings, max_examples=max_examples)[0]
    return self._eval_cache[key].as_numpy_iterator()



def _skip_decoding():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return {"image": tfds.decode.SkipDecoding()}


def create_train_iterator(data: TfdsSource, cfg: ml_collections.ConfigDict, *,
                          global_batch_size: int, seed: int,
                          start_step: int = 0) -> Iterator[core.Batch]:
  """Infinite iterator of this host's numpy batches, one key per batch."""
  tf = _tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  keys, counts = data.keys, data.train_counts
  local_bs = global_batch_size // jax.process_count()
  # A key needs enough examples on every host to fill a batch; rarer keys are
  # dropped (and reported) rather than repeated inside one batch.
  active = core.train_keys(counts, local_bs, jax.process_count())
  skipped = int(counts[:-1].sum() - counts[active].sum())
  logging.info("Training keys: %d active of %d; %d examples filtered, %d in rare keys skipped.",
               len(active), keys.num_keys(), int(counts[-1]), skipped)

  split = tfds.split_for_jax_process(cfg.train_split)
  max_hw, max_tokens = _filter_args(cfg, train=True)
  key_fn = _key_fn(tf, keys, max_hw, max_tokens)
  example_fn = _example_fn(tf, keys, data.vocab, key_fn, keep_strings=False)
  base = data.builder.as_dataset(split=split, shuffle_files=True,
                                 decoders=_skip_decoding(),
                                 read_config=tfds.ReadConfig(shuffle_seed=seed, enable_ordering_guard=False))
  if cfg.cache:
    base = base.cache()

  augment_fn = None
  if cfg.augment.enabled:
    from im2latex_jax.data import augment as augment_lib  # pylint: disable=g-import-not-at-top
    augment_fn = functools.partial(augment_lib.augment, cfg=cfg.augment)

  # One shared, seeded key schedule: step s uses key schedule(s) on every host.
  # It is numpy (data/core.py), so the TF-free source draws the same keys.
  weights = counts[active]

  def choice_chunk(steps):
    return core.key_schedule(seed, weights, int(steps[0]), len(steps))

  # On resume, each stream skips the batches the first `start_step` steps took
  # from it, so an interrupted run sees exactly the batches of an
  # uninterrupted one (the skip happens before decoding, so it is cheap).
  consumed = core.consumed_per_key(seed, weights, start_step)

  streams = []
  for i, k in enumerate(active):
    ds = base.filter(lambda ex, k=k: key_fn(ex["image"], ex["formula"]) == k)
    ds = ds.repeat().shuffle(cfg.shuffle_buffer, seed=seed + 7919 * i)
    skip = int(consumed[i]) * local_bs
    ds = ds.skip(skip).enumerate(start=skip)
    ds = ds.map(lambda n, ex: (n, example_fn(ex)), num_parallel_calls=tf.data.AUTOTUNE)
    if augment_fn is not None:
      ds = ds.map(lambda n, ex, i=i: (n, {**ex, "image": augment_fn(
          ex["image"], tf.stack([tf.cast(seed + 7919 * i, tf.int64), n]))}),
                  num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda n, ex: {k_: v for k_, v in ex.items() if k_ != "key"})
    streams.append(ds.batch(local_bs, drop_remainder=True))

  choice = tf.data.Dataset.range(start_step, 1 << 62).batch(core.SCHEDULE_BLOCK).map(
      lambda s: tf.reshape(tf.numpy_function(choice_chunk, [s], tf.int64), [-1])).unbatch()
  ds = tf.data.Dataset.choose_from_datasets(streams, choice, stop_on_empty_dataset=True)
  ds = ds.prefetch(cfg.prefetch)
  return ds.as_numpy_iterator()


def create_eval_dataset(data: TfdsSource, cfg: ml_collections.ConfigDict, split: str, *,
                        global_batch_size: int, keep_strings: bool = False,
                        max_examples: int | None = None):
  """A finite tf.data.Dataset of this host's batches; every example once.

  Args:
    data: from `get_data`.
    cfg: config.input.
    split: a TFDS split string (slicing allowed: 'validation[7475:]').
    global_batch_size: total batch over hosts.
    keep_strings: also yield 'formula' and 'image_name' (for predictions).
    max_examples: evaluate only the first N examples of the split.

  Returns:
    (dataset, num_examples, num_batches).
  """
  tf = _tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  check_split(data.builder, split)
  # Percent slices cannot be shortened exactly; they are evaluated whole.
  split, _ = core.limit_split(split, max_examples)
  keys = data.keys
  local_bs = global_batch_size // jax.process_count()
  max_hw, max_tokens = _filter_args(cfg, train=False)
  key_fn = _key_fn(tf, keys, max_hw, max_tokens)
  # Counts for every host's slice, so all hosts run the same batches per key.
  host_splits = tfds.even_splits(split, n=jax.process_count(), drop_remainder=False)
  per_host = np.stack([count_keys(data.builder, s, keys, max_hw, max_tokens)
                       for s in host_splits])
  mine = per_host[jax.process_index()]
  n_batches = core.eval_batch_counts(per_host[:, :-1], local_bs)
  if per_host[:, -1].sum():
    logging.warning("%s: %d examples fall outside the buckets/filter and are "
                    "not evaluated.", split, int(per_host[:, -1].sum()))

  base = data.builder.as_dataset(split=host_splits[jax.process_index()],
                                 shuffle_files=False, decoders=_skip_decoding())
  example_fn = _example_fn(tf, keys, data.vocab, key_fn, keep_strings)
  out = None
  for k in np.flatnonzero(n_batches):
    h, w, t = keys.key_shape(int(k))
    ds = base.filter(lambda ex, k=k: key_fn(ex["image"], ex["formula"]) == k)
    ds = ds.map(example_fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda ex: {k_: v for k_, v in ex.items() if k_ != "key"})
    pad = {"image": tf.fill([h, w, 1], tf.constant(255, tf.uint8)),
           "image_hw": tf.constant([h, w], tf.int32),
           "tokens": tf.zeros([t], tf.int32), "weight": tf.constant(0.0)}
    if keep_strings:
      pad.update(formula=tf.constant(""), image_name=tf.constant(""))
    num_pad = int(n_batches[k] * local_bs - mine[k])
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(num_pad))
    ds = ds.batch(local_bs, drop_remainder=True)
    out = ds if out is None else out.concatenate(ds)
  if out is None:
    raise ValueError(f"Split {split!r} has no example that fits the buckets.")
  return out.prefetch(2), int(mine[:-1].sum()), int(n_batches.sum())


def get_data(cfg: ml_collections.ConfigDict, *, vocab: vocab_lib.Vocab | None = None,
             need_train: bool = True) -> TfdsSource:
  """Prepares the dataset, the vocabulary and the training key counts."""
  builder = get_builder(cfg)
  keys = make_keys(cfg)
  if vocab is None:
    vocab = load_vocab(builder, cfg)
  counts, num_train = None, 0
  if need_train:
    check_split(builder, cfg.train_split)
    max_hw, max_tokens = _filter_args(cfg, train=True)
    counts = count_keys(builder, cfg.train_split, keys, max_hw, max_tokens)
    num_train = int(counts[:-1].sum())
  return TfdsSource(builder=builder, vocab=vocab, keys=keys, train_counts=counts,
                    num_train=num_train, cfg=cfg)


def export_shards(cfg: ml_collections.ConfigDict, out_dir: str,
                  splits: tuple[str, ...] | None = None,
                  max_examples: int | None = None) -> dict:
  """Writes config.input's splits as a shards dir (data/shards.py's format),
  with this pipeline's key assignment and encoding.

  Args:
    cfg: config.input.
    out_dir: created if missing.
    splits: default (train_split, eval_split).
    max_examples: export only the first N examples of each split.

  Returns:
    the index written to out_dir/index.json.
  """
  tf = _tf()
  data = get_data(cfg, need_train=False)
  keys = data.keys
  writer = shards.ShardWriter(out_dir, keys, data.vocab, cfg.train_split)
  for split in splits or (cfg.train_split, cfg.eval_split):
    check_split(data.builder, split)
    max_hw, max_tokens = _filter_args(cfg, train=split == cfg.train_split)
    key_fn = _key_fn(tf, keys, max_hw, max_tokens)
    example_fn = _example_fn(tf, keys, data.vocab, key_fn, keep_strings=True)
    ds = data.builder.as_dataset(split=split, shuffle_files=False, decoders=_skip_decoding())
    if max_examples:  # the first N in split order (all of a shorter split)
      ds = ds.take(int(max_examples))
    ds = ds.enumerate().map(lambda n, ex: (n, key_fn(ex["image"], ex["formula"]), ex))
    counts = np.zeros(keys.num_keys() + 1, np.int64)
    for _, k, _ in ds.map(lambda n, k, ex: (n, k, 0)).as_numpy_iterator():
      counts[k] += 1  # -1 (dropped) lands in the last slot
    writer.set_counts(split, counts)
    ds = ds.filter(lambda n, k, ex: k >= 0).map(
        lambda n, k, ex: (n, example_fn(ex)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    for n, ex in ds.as_numpy_iterator():
      writer.add(split, int(n), int(ex["key"]), ex)
  return writer.close()
