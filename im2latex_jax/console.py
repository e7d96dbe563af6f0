"""What the commands print: this project's lines, plain; the libraries' only when asked.

The command-line entry points call `setup(verbose)`. Without --verbose:
- log records print as their message alone (`warning: ` / `error: ` before
  those levels), not in absl's `I1208 02:43:45.347598 1397… train.py:172]`
  format;
- INFO records print only from this package; every library's warnings and
  errors still print (but for `HARMLESS_WARNINGS`, which no user can act on);
- wandb prints nothing of its own (WANDB_SILENT) but still logs the run;
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
import time
from typing import Iterator

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Library warnings that say nothing a user can act on.
HARMLESS_WARNINGS = (
    # TFDS, reading our ordered builder with shuffled files (on purpose).
    "Dataset is an ordered dataset",
    # TFDS, about its own cache folder while it builds it the first time.
    "has no dataset_info.json",
    # Orbax, opening a workdir's checkpoints to read them (evaluate, predict).
    "read_only=True, setting save_interval_steps=0",
    "Given directory is read only",
    "Metadata file does not exist",
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
  # wandb's own banner and run summary (~35 lines offline); the run's data
  # is still written (workdir/wandb) and synced as configured.
  os.environ.setdefault("WANDB_SILENT", "true")
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  # absl's handler on the root logger reaches every library's Python logging
  # (and makes a library's later logging.basicConfig() a no-op).
  absl_logging.use_absl_handler()
  for handler in {absl_logging.get_absl_handler(), *logging.getLogger().handlers}:
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


class Progress:
  """Progress lines for long work: `rendered 400/1000 formulas, 95/s, ETA 0:06`.

  `update(done)` prints at most one line every `every_s` seconds, and always
  the last (done == total). Without a total there is no ETA.
  """

  def __init__(self, total: int | None, noun: str, verb: str = "done", *,
                every_s: float = 10.0, stream=None):
    self._clock = time.monotonic
    self.total, self.noun, self.verb, self.every_s = total, noun, verb, every_s
    self.stream = stream
    self.start = self._last = self._clock()

  def line(self, done: int) -> str:
    elapsed = max(self._clock() - self.start, 1e-9)
    rate = done / elapsed
    of = f"/{self.total}" if self.total is not None else ""
    # Slow units (benchmark conditions, trials) read better as seconds each.
    speed = f"{rate:.1f}/s" if rate >= 1 or done == 0 else f"{1 / rate:.0f} s each"
    text = f"{self.verb} {done}{of} {self.noun}, {speed}"
    if self.total is not None and rate > 0:
      eta = int(round(max(self.total - done, 0) / rate))
      text += f", ETA {eta // 60}:{eta % 60:02d}"
    return text

  def update(self, done: int) -> None:
    now = self._clock()
    if now - self._last >= self.every_s or (self.total is not None and done >= self.total):
      self._last = now
      print(self.line(done), file=self.stream or sys.stderr, flush=True)
