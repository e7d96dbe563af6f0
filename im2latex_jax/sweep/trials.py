"""Running one sweep trial, and the worker loop that runs trials.

Each trial is an ordinary training run in a subprocess,
`python -m im2latex_jax.main train --config <base> --workdir <root>/<study>/<n>
--config.k=v ...`, logging to `<workdir>/train.log`. While it runs, the
worker reads its metrics.jsonl, reports the space's metric to Optuna and kills
the run when the pruner (MedianPruner) says so. A worker runs trials until the
study holds the wanted number of finished ones (complete, pruned, or crashed).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from im2latex_jax import workdir as workdir_lib
from im2latex_jax.sweep import space as sweep_space
from im2latex_jax.sweep import study as study_lib
from im2latex_jax.sweep.space import Space

POLL_S = 1.0


class TrialCrashed(RuntimeError):
  """The training subprocess exited non-zero (recorded as FAIL)."""


class _FileLock:
  """A host-local lock so that local workers never overshoot --trials."""

  def __init__(self, path: str):
    self._f = open(path, "a+")  # pylint: disable=consider-using-with
    self.held = False

  def acquire(self):
    fcntl.flock(self._f, fcntl.LOCK_EX)
    self.held = True

  def release(self):
    if self.held:
      fcntl.flock(self._f, fcntl.LOCK_UN)
      self.held = False


# ------------------------------------------------------------- the trial
def train_command(space: Space, workdir: str, params: dict[str, Any]) -> list[str]:
  return [sys.executable, "-m", "im2latex_jax.main", "train", "--config", space.config_path,
          "--workdir", workdir, *sweep_space.overrides(space, params)]


def die_with_parent():
  """Training subprocesses die with their worker (Linux), never orphaned."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _kill(proc: subprocess.Popen) -> None:
  if proc.poll() is None:
    proc.terminate()
    try:
      proc.wait(10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def _log_error(log_path: str) -> str:
  try:
    with open(log_path, encoding="utf-8", errors="replace") as f:
      lines = [l.strip() for l in f.readlines()[-200:] if l.strip()]
  except OSError:
    return ""
  errs = [l for l in lines if l.startswith("error:") or "Error" in l.split(":")[0]]
  return (errs or lines or [""])[-1][:500]


def make_objective(space: Space, study_name: str, root: str, lock: _FileLock | None = None):
  optuna = study_lib.import_optuna()

  def objective(trial) -> float:
    if lock is not None:
      lock.release()  # The trial exists now; other local workers may ask.
    params = sweep_space.suggest(trial, space)
    number = trial.user_attrs.get("workdir_of", trial.number)
    workdir = os.path.join(study_lib.study_dir(root, study_name), str(number))
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "train.log")
    cmd = train_command(space, workdir, params)
    for k, v in {"host": socket.gethostname(), "pid": os.getpid(), "workdir": workdir,
                 "log": log_path,
                 "overrides": " ".join(sweep_space.overrides(space, params))}.items():
      trial.set_user_attr(k, v)
    env = dict(os.environ, WANDB_RUN_GROUP=study_name)
    print(f"[sweep] trial {trial.number} start: {' '.join(c for c in cmd[3:])}", flush=True)
    tail = workdir_lib.MetricTail(workdir_lib.metrics_path(workdir))
    last, reported = None, set()
    with open(log_path, "a", encoding="utf-8") as log:
      log.write(f"\n# {datetime.datetime.now().isoformat()} trial {trial.number}: "
                f"{' '.join(cmd)}\n")
      log.flush()
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                              preexec_fn=die_with_parent)
      try:
        while True:
          rc = proc.poll()
          for row in tail.read():
            if space.metric not in row:
              continue
            last = float(row[space.metric])
            step = int(row["step"])
            if step not in reported:
              reported.add(step)
              trial.report(last, step)
              if trial.should_prune():
                _kill(proc)
                print(f"[sweep] trial {trial.number} pruned at step {step} "
                      f"({space.metric} {last:.4g}).", flush=True)
                raise optuna.TrialPruned(f"{space.metric}={last} at step {step}")
          if rc is not None:
            break
          time.sleep(POLL_S)
      finally:
        _kill(proc)
    if rc != 0 or last is None:
      why = (f"training exited with status {rc}" if rc != 0 else
             f"training reported no {space.metric}")
      trial.set_user_attr("crashed", True)
      trial.set_user_attr("error", f"{why}: {_log_error(log_path)}")
      print(f"[sweep] trial {trial.number} FAILED ({why}); log: {log_path}", flush=True)
      raise TrialCrashed(f"{why}; see {log_path}")
    print(f"[sweep] trial {trial.number} done: {space.metric} = {last:.5g}", flush=True)
    return last

  return objective


# ------------------------------------------------------------ the workers
def run_worker(space: Space, study_name: str, root: str, storage_url: str, trials: int,
               heartbeat_s: int, grace_s: int) -> int:
  """Runs trials until the study holds `trials` finished ones."""
  optuna = study_lib.import_optuna()
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  storage = study_lib.open_storage(storage_url, heartbeat_s, grace_s)
  study = study_lib.load_or_create_study(space, study_name, storage, create=False)
  lock = _FileLock(os.path.join(study_lib.study_dir(root, study_name), ".worker.lock"))
  objective = make_objective(space, study_name, root, lock)
  while True:
    lock.acquire()
    try:
      study_lib.reap_dead_local_trials(study)
      optuna.storages.fail_stale_trials(study)
      ts = study.get_trials(deepcopy=False)
      done = sum(study_lib.finished(t) for t in ts)
      running = sum(t.state.name == "RUNNING" for t in ts)
      waiting = sum(t.state.name == "WAITING" for t in ts)
      if done >= trials:
        return 0
      if done + running >= trials and not waiting:
        # Enough trials are under way; wait in case one of them dies (its
        # retry is then enqueued and picked up here).
        lock.release()
        time.sleep(max(POLL_S, heartbeat_s / 2))
        continue
      study.optimize(objective, n_trials=1, catch=(TrialCrashed,), gc_after_trial=False)
    finally:
      lock.release()


