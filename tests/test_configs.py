"""Every config file loads, locks, and builds its model; the CLI dispatches."""

import os
import pathlib
import subprocess
import sys

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import pytest

from im2latex_jax import main as cli
from im2latex_jax import models
from im2latex_jax.data import buckets

from conftest import REPO

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", [None, "reduced"])
def test_config_loads_and_locks(path, arg):
  if path.stem in ("quickstart", "fake_bench", "compare") and arg:
    pytest.skip("takes no protocol argument")
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
  spec = str(path) + (f":{arg}" if arg else "")
  fv(["prog", f"--config={spec}"])
  c = fv.config
  assert isinstance(c, ml_collections.ConfigDict)
  with pytest.raises(AttributeError):
    c.optim.lrr = 0.1  # locked: a typo fails loudly
  if arg == "reduced":
    assert c.input.eval_split == "validation[7475:]"
  # The model the config names, abstractly initialized and applied to a batch
  # of its first bucket (jax.eval_shape: shapes only, no arithmetic).
  model = models.get_model(c.model, 100)
  h, w = buckets.parse_buckets(c.input.buckets)[0]
  img = jax.ShapeDtypeStruct((2, h, w, 1), jnp.uint8)
  hw = jax.ShapeDtypeStruct((2, 2), jnp.int32)
  tokens = jax.ShapeDtypeStruct((2, 7), jnp.int32)
  variables = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a), img, hw, tokens)
  logits = jax.eval_shape(model.apply, variables, img, hw, tokens)
  assert logits.shape == (2, 7, 100)


def _train_cli(*args):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "im2latex_jax.main", "train", *args],
                        capture_output=True, text=True, timeout=300, env=env)


def test_cli_overrides_apply_and_typos_fail(tmp_path):
  """Overrides reach the config (also of None-default fields); typos fail."""
  out = _train_cli("--config", str(REPO / "configs" / "im2markup.py"),
                   "--workdir", str(tmp_path / "w"),
                   f"--config.input.manual_dir={tmp_path / 'nowhere'}",
                   "--config.eval_max_examples=5", "--config.wandb.group=g")
  assert out.returncode == 1
  assert f"{tmp_path / 'nowhere'}' does not exist" in out.stderr
  out = _train_cli("--config", str(REPO / "configs" / "quickstart.py"),
                   "--workdir", str(tmp_path / "w"), "--config.optim.lrr=0.3")
  assert out.returncode != 0
  assert "lrr" in out.stderr


def _load(stem):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = next(p for p in CONFIGS if p.stem == stem)
  spec = importlib.util.spec_from_file_location(f"c_{stem}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_compare_recipes_keep_their_optimizer_on_shared_data():
  compare = _load("compare")
  configs = {arg: compare.get_config(arg) for arg in
             ("im2markup", "seed", "transformer", "shipped", "seed+aug", "transformer+aug")}
  expected = {"im2markup": ("sgd", 20), "seed": ("momentum", 32), "transformer": ("adamw", 32),
              "shipped": ("adam", 64)}
  for arg, c in configs.items():
    name = arg.split("+")[0]
    assert (c.optim.name, c.input.batch_size) == expected[name]
    assert c.input.eval_split == "validation[7475:]"
    assert c.input.train_split == "train+validation[:7475]"
    assert c.input.buckets == configs["seed"].input.buckets
    assert c.input.augment.enabled == arg.endswith("+aug")
    assert c.num_train_steps == compare.STEPS[name]
  with pytest.raises(ValueError, match="Unknown comparison 'seed\\+jitter'"):
    compare.get_config("seed+jitter")


def test_bad_protocol():
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = next(p for p in CONFIGS if p.stem == "im2markup")
  spec = importlib.util.spec_from_file_location("c", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  with pytest.raises(ValueError, match="Unknown protocol 'bogus'"):
    mod.get_config("bogus")


def test_cli_unknown_command(capsys):
  assert cli.run(["im2latex-jax", "frobnicate"]) == 2
  assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_cli_help(capsys):
  assert cli.run(["im2latex-jax", "--help"]) == 0
  out = capsys.readouterr().out
  for cmd in ("train", "evaluate", "predict", "serve", "render", "sweep"):
    assert f"im2latex-jax {cmd}" in out


@pytest.mark.parametrize("override,key", [
    ("--config.optim.lr=-1", "optim.lr"),
    ("--config.optim.lr=0", "optim.lr"),
    ("--config.input.batch_size=0", "input.batch_size"),
    ("--config.num_train_steps=0", "num_train_steps"),
    ("--config.eval_every_steps=-5", "eval_every_steps"),
])
def test_unusable_values_are_refused_with_their_key(tmp_path, override, key):
  from im2latex_jax import defaults  # pylint: disable=g-import-not-at-top
  c = _load("quickstart").get_config()
  with c.unlocked():
    name, value = override[len("--config."):].split("=")
    node = c
    *parents, last = name.split(".")
    for part in parents:
      node = node[part]
    node[last] = type(node[last])(value)
  with pytest.raises(ValueError, match=f"config.{key}="):
    defaults.check_config(c)
  defaults.check_config(_load("quickstart").get_config())  # the config as shipped


def test_negative_lr_fails_before_anything_is_written(tmp_path):
  out = _train_cli("--config", str(REPO / "configs" / "quickstart.py"),
                   "--workdir", str(tmp_path / "w"), "--config.optim.lr=-1")
  assert out.returncode == 1
  assert "config.optim.lr=-1.0 must be positive" in out.stderr
  assert not (tmp_path / "w").exists()
