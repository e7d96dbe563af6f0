"""`im2latex-jax train --config FILE[:arg] --workdir DIR [--config.a.b=v ...]`.

The console shows this project's lines (config, data keys, progress with loss
and ETA, evaluations) and every library's warnings and errors; the libraries'
INFO lines (TFDS, Orbax, JAX) only with --verbose.
"""

from __future__ import annotations

import logging as py_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, vocabulary.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host).")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Also show the libraries' INFO lines (TFDS, Orbax, JAX).")
flags.mark_flags_as_required(["config", "workdir"])

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class ProjectInfoFilter(py_logging.Filter):
  """Passes warnings and errors, and INFO/DEBUG only from this package."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return (record.levelno >= py_logging.WARNING
            or os.path.abspath(record.pathname).startswith(_PACKAGE_DIR))


def quiet_library_info() -> None:
  """Installs ProjectInfoFilter on absl's handler (which every library's
  Python logging reaches through the root logger)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, ProjectInfoFilter) for f in handler.filters):
    handler.addFilter(ProjectInfoFilter())


def _main(argv):
  del argv
  if not _VERBOSE.value:
    quiet_library_info()
  from im2latex_jax import sharding  # pylint: disable=g-import-not-at-top
  from im2latex_jax import train  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed(_DISTRIBUTED.value)
  logging.info("Config:\n%s", _CONFIG.value)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
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
