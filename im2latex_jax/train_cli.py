"""The training commands: the only importer of train.py.

  im2latex-jax train --config FILE[:arg] --workdir DIR [--config.a.b=v ...]
  im2latex-jax shards export --config FILE[:arg] --out DIR [--splits a,b] [--max_examples N]
  im2latex-jax shards train --config FILE[:arg] --shards DIR --workdir W [--config.a.b=v ...]

`train(config, workdir)` is the same for Python callers (notebooks).

The console shows this project's lines, plain (a config summary, data keys,
progress with loss and ETA, evaluations) and every library's warnings and
errors; the libraries' INFO lines, TFDS's progress bars and TensorFlow's
start-up banners only with --verbose (`console`).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from im2latex_jax import console

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, vocabulary.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host).")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Also show the libraries' INFO lines (TFDS, Orbax, JAX).")
flags.mark_flags_as_required(["config", "workdir"])

def train(config, workdir: str) -> dict:
  """Runs train.train_and_evaluate (for notebooks and scripts)."""
  from im2latex_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  return train_lib.train_and_evaluate(config, workdir)


def _main(argv):
  del argv
  console.setup(_VERBOSE.value)
  from im2latex_jax import sharding  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed(_DISTRIBUTED.value)
  return _train_or_error(_CONFIG.value, _WORKDIR.value)


def config_summary(config, workdir: str) -> str:
  """One line on what is about to train; the whole config is in the workdir."""
  data = config.input.get("manual_dir") or config.input.get("data_dir") or "fake data"
  return (f"training {config.model.name} on {data} ({config.input.train_split}; "
          f"evaluating on {config.input.eval_split}), batch "
          f"{config.input.batch_size}, {config.num_train_steps} steps, optimizer "
          f"{config.optim.name} lr {config.optim.lr:g}; "
          f"full config: {os.path.join(workdir, 'config.json')}")


def _train_or_error(config, workdir: str) -> int:
  """Trains; 0, or 1 with one `error:` line for an expected user error."""
  logging.info("%s", config_summary(config, workdir))
  try:
    train(config, workdir)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    # Expected user errors: one clear line, no stack trace.
    logging.error("%s", e)
    sys.stderr.write(f"error: {e}\n")
    return 1
  return 0


def main(argv: list[str]) -> int:
  rc = 0

  def wrapped(a):
    nonlocal rc
    rc = _main(a)
  try:
    app.run(wrapped, argv=argv)
  except SystemExit as e:
    return int(e.code or rc)
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    # Raised while absl parses `--config.a.b=v` overrides against the locked
    # config: a typo or a wrong type. One line, with ml_collections' hint.
    msg = str(e).replace("\\n", " ").replace("\\'", "'").strip("'\" ")
    sys.stderr.write(f"error: bad config override: {msg}. List the keys with "
                     "`python -c \"import runpy; print(runpy.run_path('CONFIG')['get_config']())\"`.\n")
    return 2
  return rc


SHARDS_USAGE = """usage:
  im2latex-jax shards export --config CONFIG[:arg] --out DIR
      [--splits train,validation] [--max_examples N] [--config.x=y ...]
  im2latex-jax shards train --config CONFIG[:arg] --shards DIR --workdir W [--config.x=y ...]
"""


def shards_main(argv: list[str]) -> int:
  """`im2latex-jax shards export|train`: write numpy shards (needs TensorFlow),
  or train from them (needs neither TensorFlow nor wandb)."""
  if len(argv) < 2 or argv[1] not in ("export", "train"):
    sys.stderr.write(SHARDS_USAGE)
    return 2
  cmd, rest = argv[1], [f"{argv[0]} {argv[1]}"] + argv[2:]
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  fv = absl_flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv,
                                  lock_config=True, sys_argv=rest)
  names = ("out", "splits", "max_examples") if cmd == "export" else ("shards", "workdir")
  for name in names:
    absl_flags.DEFINE_string(name, "", name, flag_values=fv)
  absl_flags.DEFINE_bool("verbose", False, "the libraries' INFO lines too", flag_values=fv)
  try:
    fv(rest)
  except (absl_flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    sys.stderr.write(f"error: {e}\n" + SHARDS_USAGE)
    return 2
  required = ("config", "out") if cmd == "export" else ("config", "shards", "workdir")
  missing = [f"--{n}" for n in required if not fv[n].value]
  if missing:
    sys.stderr.write(f"error: {' and '.join(missing)} required.\n" + SHARDS_USAGE)
    return 2
  console.setup(fv.verbose)
  logging.set_verbosity(logging.INFO)
  config = fv.config
  if cmd == "train":
    # `train` with the shards loader (no TensorFlow, no wandb needed).
    with config.unlocked():
      config.input.loader = "shards"
      config.input.shards_dir = os.path.abspath(fv.shards)
    return _train_or_error(config, fv.workdir)
  from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  splits = tuple(s for s in fv.splits.split(",") if s) or None
  index = input_pipeline.export_shards(config.input, fv.out, splits,
                                       int(fv.max_examples) if fv.max_examples else None)
  for name, s in index["splits"].items():
    print(f"{name}: {sum(s['counts'][:-1])} examples in {len(s['files'])} keys "
          f"({s['counts'][-1]} outside the buckets/filter)")
  print(f"wrote {os.path.abspath(fv.out)}")
  return 0
