"""Vocabulary, buckets, the TFDS builder and the tf.data pipeline."""

import os
import shutil

import numpy as np
import pytest

from im2latex_jax.data import buckets
from im2latex_jax.data import im2latex100k
from im2latex_jax.data import input_pipeline
from im2latex_jax.data import vocab as vocab_lib


def test_vocab_build_counts_and_roundtrip(tmp_path):
  v = vocab_lib.Vocab.build(["a b c", "a b", "a d"], min_count=2)
  # a (3) and b (2) kept, most frequent first; c, d seen once -> <unk>.
  assert v.tokens == ["<pad>", "<s>", "</s>", "<unk>", "a", "b"]
  assert v.encode("a b c") == [4, 5, vocab_lib.UNK]
  assert v.decode([4, 5, vocab_lib.EOS, 4]) == "a b"
  v.save(str(tmp_path / "vocab.txt"))
  assert vocab_lib.Vocab.load(str(tmp_path / "vocab.txt")) == v


def test_vocab_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="vocab.txt"):
    vocab_lib.Vocab.load(str(tmp_path / "vocab.txt"))
  (tmp_path / "bad.txt").write_text("a\nb\n")
  with pytest.raises(ValueError, match="special tokens"):
    vocab_lib.Vocab.load(str(tmp_path / "bad.txt"))


def test_im2markup_buckets():
  assert len(buckets.IM2MARKUP_BUCKETS) == 21
  assert (50, 120) in buckets.IM2MARKUP_BUCKETS and (800, 800) in buckets.IM2MARKUP_BUCKETS
  assert buckets.first_fit(33, 150, buckets.IM2MARKUP_BUCKETS) == (40, 160)
  assert buckets.first_fit(900, 10, buckets.IM2MARKUP_BUCKETS) is None
  assert buckets.parse_buckets("40x160,50x120") == ((50, 120), (40, 160))
  with pytest.raises(ValueError, match="HxW"):
    buckets.parse_buckets("40by160")


def _copy_embedded(tmp_path):
  d = tmp_path / "data"
  shutil.copytree(input_pipeline.EMBEDDED_DIR, d)
  return d


def test_data_dir_errors_name_the_file(tmp_path):
  with pytest.raises(im2latex100k.DataFormatError, match="does not exist"):
    im2latex100k.check_data_dir(str(tmp_path / "nope"))
  d = _copy_embedded(tmp_path)
  os.remove(d / im2latex100k.IMAGES_TAR)
  with pytest.raises(im2latex100k.DataFormatError, match="formula_images_processed.tar.gz"):
    im2latex100k.check_data_dir(str(d))


def test_formula_index_out_of_range(tmp_path):
  (tmp_path / "list.lst").write_text("a.png 0\nb.png 7\n")
  with pytest.raises(im2latex100k.DataFormatError, match=r"list.lst:2: formula index 7"):
    im2latex100k.read_split_list(str(tmp_path / "list.lst"), num_formulas=5)
  (tmp_path / "bad.lst").write_text("a.png zero\n")
  with pytest.raises(im2latex100k.DataFormatError, match="expected '<image name>"):
    im2latex100k.read_split_list(str(tmp_path / "bad.lst"), num_formulas=5)


def test_builder_reads_embedded_layout(embedded_data):
  cfg, data = embedded_data
  info = data.builder.info
  assert set(info.splits.keys()) == {"train", "validation"}  # no test split: absent
  assert info.splits["train"].num_examples == 720
  ex = next(iter(data.builder.as_dataset(split="train[:1]").as_numpy_iterator()))
  assert ex["image"].dtype == np.uint8 and ex["image"].shape[-1] == 1
  assert ex["image_name"].decode().endswith(".png") and ex["formula"]


def test_missing_split_is_a_clear_error(embedded_data):
  cfg, data = embedded_data
  with pytest.raises(ValueError, match="not in this dataset"):
    input_pipeline.check_split(data.builder, "test")


def test_train_batches_only_have_bucket_shapes(embedded_data):
  cfg, data = embedded_data
  keys = data.keys
  allowed = {keys.key_shape(k) for k in range(keys.num_keys())}
  it = input_pipeline.create_train_iterator(data, cfg.input, global_batch_size=8, seed=0)
  seen = set()
  for _ in range(30):
    b = next(it)
    h, w, t = b["image"].shape[1], b["image"].shape[2], b["tokens"].shape[1]
    assert (h, w, t) in allowed
    assert b["image"].shape[0] == 8 and b["image"].dtype == np.uint8
    assert np.all(b["tokens"][:, 0] == vocab_lib.BOS)
    # Every row ends with EOS followed only by padding.
    for row in b["tokens"]:
      eos = int(np.flatnonzero(row == vocab_lib.EOS)[0])
      assert np.all(row[eos + 1:] == vocab_lib.PAD)
    assert np.all(b["image_hw"][:, 0] <= h) and np.all(b["image_hw"][:, 1] <= w)
    seen.add((h, w, t))
  assert len(seen) > 1


def test_train_schedule_resumes_exactly(embedded_data):
  cfg, data = embedded_data
  full = input_pipeline.create_train_iterator(data, cfg.input, global_batch_size=8, seed=3)
  batches = [next(full) for _ in range(12)]
  resumed = input_pipeline.create_train_iterator(data, cfg.input, global_batch_size=8,
                                                 seed=3, start_step=7)
  for want in batches[7:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_array_equal(got["image"], want["image"])


def test_eval_counts_every_example_once(embedded_data):
  cfg, data = embedded_data
  ds, n, nb = input_pipeline.create_eval_dataset(data, cfg.input, "validation",
                                                 global_batch_size=16, keep_strings=True)
  names, total_batches = [], 0
  for b in ds.as_numpy_iterator():
    total_batches += 1
    assert b["image"].shape[0] == 16
    names += [x for x, w in zip(b["image_name"], b["weight"]) if w > 0]
    assert np.all((b["weight"] > 0) == (b["image_name"] != b""))
  assert total_batches == nb
  assert len(names) == len(set(names)) == n == 120


def test_merge_data_dirs(tmp_path):
  from im2latex_jax.data import merge  # pylint: disable=g-import-not-at-top
  src = input_pipeline.EMBEDDED_DIR
  out = tmp_path / "merged"
  counts = merge.merge([(src, None), (src, ["validation"])], str(out))
  assert counts == {"train": 720, "validation": 240}
  formulas = im2latex100k.read_formulas(str(out / im2latex100k.FORMULAS_FILE))
  pairs = im2latex100k.read_split_list(str(out / im2latex100k.SPLIT_FILES["validation"]),
                                       len(formulas))
  names = [n for n, _ in pairs]
  assert len(set(names)) == 240 and sum(n.startswith("s1_") for n in names) == 120
  assert all((out / im2latex100k.IMAGES_DIR / n).exists() for n in names)
  # The same formula for an image and its renamed copy.
  by_name = dict(pairs)
  assert formulas[by_name["s1_" + names[0]]] == formulas[by_name[names[0]]]
  assert sorted(im2latex100k.check_data_dir(str(out))) == ["train", "validation"]


def test_split_order_is_the_list_order(embedded_data):
  cfg, data = embedded_data
  names = [l.split()[0] for l in open(os.path.join(input_pipeline.EMBEDDED_DIR,
                                                   im2latex100k.SPLIT_FILES["validation"]))]
  got = [ex["image_name"].decode() for ex in
         data.builder.as_dataset(split="validation[100:]").as_numpy_iterator()]
  assert got == names[100:]


def test_formula_file_lines_trailing_newline_and_utf8(tmp_path):
  from im2latex_jax.data import layout  # pylint: disable=g-import-not-at-top
  f = tmp_path / "f.lst"
  f.write_bytes(b"a + b\nx ^ { 2 }\n")
  assert layout.read_formulas(str(f)) == ["a + b", "x ^ { 2 }"]
  lst = tmp_path / "l.lst"
  lst.write_text("i0 0\ni2 2\n")
  # Index 2 is one past the end: refused, and the message counts 2 lines.
  with pytest.raises(layout.DataFormatError, match=r"l.lst:2: formula index 2 .* has 2 lines"):
    layout.read_split_list(str(lst), 2)
  f.write_bytes(b"a + b\n\\alpha \xe9\n")
  with pytest.raises(layout.DataFormatError, match=r"f.lst:2: byte 0xe9 is not UTF-8"):
    layout.read_formulas(str(f))


def test_truncated_image_archive_names_the_file(tmp_path):
  import io as io_lib  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  from im2latex_jax.data import layout  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  good = tmp_path / layout.IMAGES_TAR
  with tarfile.open(good, "w:gz") as tar:
    for k in range(20):
      data = rng.bytes(5000)  # incompressible, so the cut falls inside the data
      info = tarfile.TarInfo(f"{layout.IMAGES_DIR}/{k}.png")
      info.size = len(data)
      tar.addfile(info, io_lib.BytesIO(data))
  assert len(list(layout.iter_images(str(good)))) == 20
  raw = good.read_bytes()
  good.write_bytes(raw[:len(raw) // 2])
  with pytest.raises(layout.DataFormatError, match="truncated or corrupt.*download it"):
    list(layout.iter_images(str(good)))


def test_prepared_data_is_keyed_on_content(tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from im2latex_jax.data import input_pipeline, layout  # pylint: disable=g-import-not-at-top
  src = tmp_path / "src"
  layout.write_dataset(str(src), ["a", "b"], "train",
                       [(0, "a.png", np.zeros((8, 8), np.uint8))])
  cfg = ml_collections.ConfigDict({"data_dir": None})
  first = input_pipeline._data_dir(cfg, str(src))  # pylint: disable=protected-access
  assert input_pipeline._data_dir(cfg, str(src)) == first  # pylint: disable=protected-access
  # A corrected formula file (same path) is another dataset to prepare.
  (src / layout.FORMULAS_FILE).write_text("a\nc\n")
  assert input_pipeline._data_dir(cfg, str(src)) != first  # pylint: disable=protected-access
