"""What the commands print: this project's lines, plain; the libraries' only when asked.

The command-line entry points call `setup(verbose)`. Without --verbose:
- log records print as their message alone (`warning: ` / `error: ` before
  those levels), not in absl's `I1208 02:43:45.347598 1397… train.py:172]`
  format;
- INFO records print only from this package; every library's warnings and
  errors still print (but for `HARMLESS_WARNINGS`, which no user can act on);
- `quiet()` silences what libraries write straight to the terminal while
  the data pipeline starts: TensorFlow's C++ start-up banners, TFDS's
  progress bars and "Downloading and preparing" prints.
Library callers (notebooks, tests) that never call `setup` keep every
library's output as it was.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from typing import Iterator

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Library warnings that say nothing a user can act on.
HARMLESS_WARNINGS = (
    # TFDS, reading our ordered builder with shuffled files (on purpose).
    "Dataset is an ordered dataset",
    # TFDS, about its own cache folder while it builds it the first time.
    "has no dataset_info.json",
)

_verbose = True


def is_verbose() -> bool:
  return _verbose


class PlainFormatter(logging.Formatter):
  """The message alone; `warning: ` or `error: ` before those levels."""

  def format(self, record: logging.LogRecord) -> str:
    message = record.getMessage()
    if record.exc_info:
      message += "\n" + self.formatException(record.exc_info)
    if record.levelno >= logging.ERROR:
      return "error: " + message
    if record.levelno >= logging.WARNING:
      return "warning: " + message
    return message


class ProjectInfoFilter(logging.Filter):
  """Passes warnings and errors (less the harmless ones), and INFO/DEBUG only
  from this package."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return not any(w in record.getMessage() for w in HARMLESS_WARNINGS)
    return os.path.abspath(record.pathname).startswith(_PACKAGE_DIR)


def setup(verbose: bool) -> None:
  """Sets what the process prints (see the module docstring)."""
  global _verbose
  _verbose = verbose
  if verbose:
    return
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handler = absl_logging.get_absl_handler()
  # absl's handler reaches every library's Python logging (root logger).
  handler.setFormatter(PlainFormatter())
  if not any(isinstance(f, ProjectInfoFilter) for f in handler.filters):
    handler.addFilter(ProjectInfoFilter())
  absl_logging.set_verbosity(absl_logging.INFO)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
  """Silences what libraries print directly (stdout, and stderr at the file
  descriptor: C++ start-up lines) unless verbose; Python exceptions still
  propagate, and the captured text is printed if one does."""
  if _verbose:
    yield
    return
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(2)
  captured = io.StringIO()
  try:
    with open(os.devnull, "w", encoding="utf-8") as null:
      os.dup2(null.fileno(), 2)
      try:
        with contextlib.redirect_stdout(captured):
          yield
      finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
  except BaseException:
    sys.stderr.write(captured.getvalue())
    raise
  finally:
    os.close(saved)
