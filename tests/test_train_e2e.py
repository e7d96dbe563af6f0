"""End to end: train_and_evaluate on the embedded data; resume after a kill."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import flax
import jax
import numpy as np
import pytest

from im2latex_jax import state as state_lib
from im2latex_jax.infer import inference
from im2latex_jax import train
from im2latex_jax import writers

from conftest import REPO, tiny_config


def _cfg(tfds_dir, steps):
  c = tiny_config()
  c.input.data_dir = str(tfds_dir)
  c.num_train_steps = steps
  c.eval_every_steps = 3
  c.log_every_steps = 1
  c.eval_max_examples = 32
  return c


def _train_losses(workdir):
  return {r["step"]: r["train/loss"] for r in writers.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train/loss" in r}


@pytest.mark.slow
def test_resume_continues_exactly(tfds_dir, tmp_path):
  """3 steps + restart + 3 steps == 6 steps: same batches, params, optimizer, plateau."""
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  final_a = train.train_and_evaluate(_cfg(tfds_dir, 6), a)
  train.train_and_evaluate(_cfg(tfds_dir, 3), b)
  assert sorted(_train_losses(b)) == [1, 2, 3]
  final_b = train.train_and_evaluate(_cfg(tfds_dir, 6), b)
  assert final_a["step"] == final_b["step"] == 6
  la, lb = _train_losses(a), _train_losses(b)
  assert sorted(lb) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([lb[s] for s in range(1, 7)], [la[s] for s in range(1, 7)], rtol=1e-5)

  from im2latex_jax import checkpointing  # pylint: disable=g-import-not-at-top
  states = []
  for w in (a, b):
    lm = inference.load_model(w, "latest")
    assert lm.step == 6
    mngr = checkpointing.make_manager(w, read_only=True)
    model, tx, plateau = state_lib.build_model_and_optimizer(lm.config, len(lm.vocab))
    abstract = jax.eval_shape(state_lib.make_init_fn(model, tx, plateau, lm.config, (32, 128)),
                              jax.random.key(0))
    states.append(checkpointing.restore(mngr, 6, abstract)[0])
  chex.assert_trees_all_close(states[0].params, states[1].params, rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(states[0].opt_state, states[1].opt_state, rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(states[0].plateau, states[1].plateau)
  # Run files are there; the vocabulary was saved once and reused.
  for f in ("config.json", "vocab.txt", "metrics.jsonl", "final_metrics.json"):
    assert os.path.exists(os.path.join(b, f))


TINY_FLAGS = [
    "--config.model.cnn_features=(4,8,8,8,16,16)", "--config.model.encoder_hidden=8",
    "--config.model.decoder_hidden=16", "--config.model.embed_dim=8",
    "--config.input.batch_size=8", "--config.input.eval_batch_size=16",
    "--config.eval_max_examples=16", "--config.log_every_steps=1",
    "--config.wandb.mode=disabled", "--config.input.buckets=40x160,50x240",
    "--config.input.token_buckets=(40,)",
]


def _cli(workdir, steps, tfds_dir, every=4):
  env = dict(os.environ, TFDS_DATA_DIR=str(tfds_dir), PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)  # one CPU device, like a user's run
  return [sys.executable, "-m", "im2latex_jax.main", "train",
          "--config", str(REPO / "configs" / "quickstart.py"), "--workdir", workdir,
          f"--config.num_train_steps={steps}", f"--config.eval_every_steps={every}",
          *TINY_FLAGS], env


@pytest.mark.slow
def test_sigkill_then_rerun_resumes(tfds_dir, tmp_path):
  workdir = str(tmp_path / "w")
  cmd, env = _cli(workdir, 10_000, tfds_dir)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 240
  try:
    while time.time() < deadline:
      steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
      if any(s >= 8 for s in steps):
        break
      assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
      time.sleep(0.2)
    else:
      pytest.fail("no checkpoint within 240 s")
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  kept = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  last = kept[-1]
  cmd, env = _cli(workdir, last + 4, tfds_dir)
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"at step {last}" in out.stderr, out.stderr[-3000:]
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    assert json.load(f)["step"] == last + 4
  steps_logged = sorted(_train_losses(workdir))
  assert steps_logged[-4:] == [last + 1, last + 2, last + 3, last + 4]


def test_non_divisible_batch_is_a_clear_cli_error(tfds_dir, tmp_path):
  cmd, env = _cli(str(tmp_path / "w"), 2, tfds_dir)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  cmd.append("--config.input.batch_size=12")
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert "batch_size=12 is not divisible by the 8 devices" in out.stderr
  assert "Traceback" not in out.stderr


LIBRARY_INFO = re.compile(r"^I\S+ \S+ \d+ (checkpoint_manager|async_checkpointer|"
                          r"dataset_info|reader|logging_logger)\.py", re.M)


def test_console_shows_progress_not_library_info(tmp_path):
  """A first run (the dataset is built): a config summary, progress lines
  with loss and ETA, plain (no absl `I1208 12:00:00.0 123 file.py:1]`
  prefixes), no config dump, no TFDS bars or prints, no TensorFlow banners,
  no library INFO (with --verbose they show: test_sigterm_saves_and_rerun_resumes),
  and nothing from wandb, which still logs the run (offline here)."""
  cmd, env = _cli(str(tmp_path / "w"), 2, tmp_path / "tfds", every=2)
  cmd = [c for c in cmd if c != "--config.wandb.mode=disabled"] + ["--config.wandb.mode=offline"]
  env = dict(env, WANDB_MODE="offline", WANDB_DIR=str(tmp_path),
             WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
             WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  text = out.stdout + out.stderr
  assert re.search(r"^\[2/2\] loss [0-9.]+ .* ETA 0:00:00$", out.stderr, re.M), text[-3000:]
  assert re.search(r"^training im2markup on embedded .* full config: .*config.json$",
                   out.stderr, re.M), text[-3000:]
  assert "eval loss" in out.stderr
  assert not LIBRARY_INFO.search(out.stderr), LIBRARY_INFO.search(out.stderr).group(0)
  assert not re.search(r"^[IWEF]\d{4} ", text, re.M), text[-3000:]
  for noise in ("Config:", "Generating splits", "Downloading and preparing",
                "Shuffling", "absl::InitializeLog", "oneDNN", "wandb:"):
    assert noise not in text, noise
  assert len(text.replace("\r", "\n").splitlines()) <= 20, text
  assert list(tmp_path.rglob("offline-run-*")), "wandb logged no run"


def test_missing_data_dir_is_a_clear_cli_error(tfds_dir, tmp_path):
  cmd, env = _cli(str(tmp_path / "w"), 2, tfds_dir)
  cmd.append(f"--config.input.manual_dir={tmp_path / 'nowhere'}")
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert "does not exist" in out.stderr and "im2latex_formulas.norm.lst" in out.stderr
  assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_sigterm_saves_and_rerun_resumes(tfds_dir, tmp_path):
  workdir = str(tmp_path / "w")
  cmd, env = _cli(workdir, 10_000, tfds_dir, every=1000)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 240
  while time.time() < deadline and not (os.path.exists(metrics) and _train_losses(workdir)):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "SIGTERM: saving a checkpoint at step" in err
  kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert kept and kept[-1] >= 1 and kept[-1] < 1000
  cmd, env = _cli(workdir, kept[-1] + 2, tfds_dir, every=1000)
  out = subprocess.run(cmd + ["--verbose"], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"at step {kept[-1]}" in out.stderr
  assert LIBRARY_INFO.search(out.stderr), out.stderr[-3000:]  # --verbose: the libraries' INFO


def test_init_from_loads_exactly_the_given_model(tfds_dir, tmp_path):
  """config.init_from: the source's params/batch stats, a fresh optimizer,
  the source's vocabulary; another network or vocabulary is a one-line error."""
  src = str(tmp_path / "src")
  train.train_and_evaluate(_cfg(tfds_dir, 3), src)
  exported = inference.export_model(src, str(tmp_path / "exported"), dtype="float32")
  want = inference.load_model(src, "best").variables

  cfg = _cfg(tfds_dir, 3)
  cfg.seed = 7  # another initialization, so equality below means "loaded"
  model, tx, plateau = state_lib.build_model_and_optimizer(cfg, len(inference.load_model(src).vocab))
  fresh = state_lib.make_init_fn(model, tx, plateau, cfg, (40, 160))(jax.random.key(7))
  assert not np.allclose(jax.tree.leaves(fresh.params)[0], jax.tree.leaves(want["params"])[0])
  for path in (src, exported):  # a workdir (best checkpoint) or an exported dir
    state = state_lib.load_init_from(fresh, path, tx, plateau)
    chex.assert_trees_all_equal(state.params, want["params"])
    chex.assert_trees_all_equal(state.batch_stats, want["batch_stats"])
    assert int(state.step) == 0
    chex.assert_trees_all_equal(state.opt_state, tx.init(want["params"]))

  # Through train_and_evaluate: a near-zero learning rate keeps the loaded
  # parameters, so the run's first checkpoint holds the source's.
  cfg.init_from = exported
  cfg.num_train_steps = 1
  cfg.optim.lr = 1e-12
  dst = str(tmp_path / "dst")
  train.train_and_evaluate(cfg, dst)
  got = inference.load_model(dst, "latest")
  assert got.vocab == inference.load_model(src).vocab
  chex.assert_trees_all_close(got.variables["params"], want["params"], atol=1e-6)

  other = _cfg(tfds_dir, 3)
  other.model.encoder_hidden = 12
  model2, tx2, plateau2 = state_lib.build_model_and_optimizer(other, len(got.vocab))
  state2 = state_lib.make_init_fn(model2, tx2, plateau2, other, (40, 160))(jax.random.key(0))
  with pytest.raises(ValueError, match=r"does not fit config\.model: params/.*is \("):
    state_lib.load_init_from(state2, exported, tx2, plateau2)

  # A workdir whose vocabulary is not the source's cannot be continued from it.
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "vocab.txt").write_text("<pad>\n<s>\n</s>\n<unk>\nx\n")
  with pytest.raises(ValueError, match="differs from .*vocab.txt") as e:
    state_lib.init_vocab(cfg, str(bad))
  assert "\n" not in str(e.value)

  # export-model --blend: alpha * this model + (1 - alpha) * the base, leaf by leaf.
  lm = inference.load_model(src, "best")
  ones = dataclasses.replace(lm, variables=jax.tree.map(np.ones_like, lm.variables),
                             model_id="ones")
  mixed = inference.blend_variables(lm, ones, 0.25)
  chex.assert_trees_all_close(mixed, jax.tree.map(lambda x: 0.25 * np.asarray(x) + 0.75,
                                                  lm.variables), atol=1e-6)
  chex.assert_trees_all_close(inference.blend_variables(lm, ones, 0.0),
                              jax.tree.map(np.ones_like, lm.variables))
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    inference.blend_variables(lm, ones, 1.5)
  # Per module: the CNN (params and batch stats) whole from this model, one
  # of its convolutions at a quarter (the longest path wins), the rest the base's.
  per = inference.blend_variables(lm, ones, 0.0, inference.parse_module_alpha("cnn=1, cnn/conv1=0.25"))
  for col in per:
    for name, sub in per[col].items():
      for path, x in flax.traverse_util.flatten_dict(sub, sep="/").items():
        mine = np.asarray(flax.traverse_util.flatten_dict(lm.variables[col][name], sep="/")[path])
        w = (0.25 if path.startswith("conv1/") else 1.0) if name == "cnn" else 0.0
        np.testing.assert_allclose(x, w * mine + (1 - w), atol=1e-6, err_msg=f"{col}/{name}/{path}")
  assert any(name != "cnn" for name in per["params"])
  with pytest.raises(ValueError, match="no module 'encoder'.*cnn"):
    inference.blend_variables(lm, ones, 0.5, {"encoder": 1.0})
  with pytest.raises(ValueError, match="bad module weight 'cnn'"):
    inference.parse_module_alpha("cnn")
  with pytest.raises(ValueError, match="weight of rows must be in"):
    inference.blend_variables(lm, ones, 0.5, {"rows": 2.0})
  blended = inference.export_model(src, str(tmp_path / "blended"), dtype="float32",
                                   blend=exported, alpha=0.3)
  got = inference.load_model(blended)
  chex.assert_trees_all_close(got.variables, want, atol=1e-6)  # a model blended with itself
  assert "*0.3+" in got.model_id
  # Another vocabulary (same size, one token renamed): a one-line error, nothing written.
  renamed = tmp_path / "renamed"
  shutil.copytree(exported, renamed)
  tokens = (renamed / "vocab.txt").read_text().splitlines()
  (renamed / "vocab.txt").write_text("\n".join(tokens[:-1] + ["\\renamedtoken"]) + "\n")
  r = subprocess.run([sys.executable, "-m", "im2latex_jax.main", "export-model", "--workdir", src,
                      "--out", str(tmp_path / "never"), "--blend", str(renamed)],
                     capture_output=True, text=True, cwd=REPO, timeout=300)
  assert r.returncode == 2 and "another vocabulary" in r.stderr, r.stderr
  assert not (tmp_path / "never").exists()
