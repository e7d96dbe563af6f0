"""Test setup: 8 fake CPU devices, a persistent compilation cache, no wandb.

XLA_FLAGS must be set before jax is imported anywhere, so it is done here at
import time of the conftest.
"""

import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.expanduser("~/.cache/im2latex_jax/xla-tests"))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "configs"))


def shared_dir() -> pathlib.Path | None:
  """`../shared` beside the checkout (or $IM2LATEX_SHARED), if present."""
  p = pathlib.Path(os.environ.get("IM2LATEX_SHARED", REPO.parent / "shared"))
  return p if p.is_dir() else None


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """One TFDS data dir for the whole session (the embedded set builds in ~3 s)."""
  d = tmp_path_factory.mktemp("tfds")
  os.environ["TFDS_DATA_DIR"] = str(d)
  return d


@pytest.fixture(scope="session")
def embedded_data(tfds_dir):
  """The embedded dataset prepared once, with a tiny key grid."""
  from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  import quickstart  # pylint: disable=g-import-not-at-top
  cfg = quickstart.get_config()
  cfg.input.data_dir = str(tfds_dir)
  return cfg, input_pipeline.get_data(cfg.input)


def tiny_config():
  """quickstart with a model small enough for unit tests."""
  import quickstart  # pylint: disable=g-import-not-at-top
  c = quickstart.get_config()
  c.model.cnn_features = (4, 8, 8, 8, 16, 16)
  c.model.encoder_hidden = 8
  c.model.decoder_hidden = 16
  c.model.embed_dim = 8
  c.input.batch_size = 8
  c.input.eval_batch_size = 16
  # Two image buckets and one token bucket: every embedded example fits, and
  # a run compiles 2 train + 2 eval shapes instead of ~12.
  c.input.buckets = "40x160,50x240"
  c.input.token_buckets = (40,)
  c.wandb.mode = "disabled"
  return c
