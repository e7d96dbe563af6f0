"""The Optuna study of a sweep: storage, sampler, pruner, and the bookkeeping
that finds trials left RUNNING by a dead worker and re-enqueues them.

A trial left RUNNING by a killed sweep is failed and its params re-enqueued
with the same workdir, so its training resumes from its last checkpoint:
  - on this host at once (the worker pid recorded in the trial is dead:
    `reap_dead_local_trials`);
  - from any other host through Optuna's RDB heartbeat (`heartbeat_interval`,
    `grace_period`): a trial whose worker stopped beating is failed by the next
    worker to start a trial, and the same re-enqueue callback (`_retry_trial`)
    runs.
"""

from __future__ import annotations

import json
import os
import socket

from im2latex_jax.sweep.space import Space


class SweepError(ValueError):
  """A user error: printed as one line."""


def import_optuna():
  """optuna, imported on first use (an optional dependency: the sweep extra)."""
  import warnings  # pylint: disable=g-import-not-at-top
  import optuna  # pylint: disable=g-import-not-at-top
  # Heartbeats are "experimental" in Optuna; they are what re-attaches trials.
  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  return optuna


# ---------------------------------------------------------------- storage
def study_dir(root: str, study: str) -> str:
  return os.path.join(os.path.abspath(root), study)


def default_storage(root: str, study: str) -> str:
  return "sqlite:///" + os.path.join(study_dir(root, study), "study.db")


def open_storage(url: str, heartbeat_s: int = 10, grace_s: int = 60):
  """An RDBStorage with a heartbeat (stale trials are failed and re-enqueued)."""
  optuna = import_optuna()
  if url.startswith("sqlite:///"):
    # Parallel workers on one SQLite file: wait for the lock instead of failing.
    d = os.path.dirname(url[len("sqlite:///"):])
    if d and not os.path.isdir(d):
      raise SweepError(f"cannot open storage {url}: folder {d} does not exist.")
    engine_kwargs = {"connect_args": {"timeout": 60}}
  elif url.startswith(("postgresql", "mysql")):
    engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
  else:
    engine_kwargs = {}
  try:
    return optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
        grace_period=grace_s, heartbeat_stale_trial_callback=_retry_trial)
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise SweepError(f"cannot open storage {url}: {first[:300]}") from None


def make_sampler(space: Space):
  """The space's sampler. Its seed is offset per worker process: with one seed,
  parallel workers would draw the same random start-up trials."""
  optuna = import_optuna()
  if space.sampler == "grid":
    # GridSampler shuffles its grid with the seed: all workers need the same.
    return _GridSampler(space.grid(), seed=space.seed or 0)
  seed = None if space.seed is None else int(space.seed) + os.getpid()
  if space.sampler == "gp":
    try:
      return optuna.samplers.GPSampler(seed=seed)
    except ImportError as e:
      raise SweepError(f"sampler 'gp' needs torch and scipy ({e}); use 'bayes'.") from None
  return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(
      10, max(2, (space.trials or 10) // 2)), constant_liar=True)


def _grid_cls():
  optuna = import_optuna()

  class Grid(optuna.samplers.GridSampler):
    # Stopping is the worker loop's job (it counts finished trials); the base
    # class would also fail on a re-enqueued trial, which has no grid id.
    def after_trial(self, study, trial, state, values):
      pass
  return Grid


def _GridSampler(*args, **kwargs):  # pylint: disable=invalid-name
  return _grid_cls()(*args, **kwargs)


def make_pruner(space: Space):
  """MedianPruner, except for grids: a grid is run exhaustively unless its
  space asks for pruning explicitly (pruner kind 'median')."""
  optuna = import_optuna()
  kind = space.pruner.get("kind", "none" if space.sampler == "grid" else "median")
  if kind == "none":
    return optuna.pruners.NopPruner()
  return optuna.pruners.MedianPruner(
      n_startup_trials=int(space.pruner.get("n_startup_trials", 2)),
      n_warmup_steps=int(space.pruner.get("n_warmup_steps", 0)))


def load_or_create_study(space: Space, name: str, storage, create: bool = True):
  """The study; its stored space must equal `space`."""
  optuna = import_optuna()
  kwargs = dict(study_name=name, storage=storage, sampler=make_sampler(space),
                pruner=make_pruner(space))
  if create:
    study = optuna.create_study(direction=space.direction, load_if_exists=True, **kwargs)
  else:
    study = optuna.load_study(**kwargs)
  stored = study.user_attrs.get("space")
  if stored is None:
    study.set_user_attr("space", space.to_json())
    study.set_user_attr("space_file", space.path)
  elif stored != space.to_json():
    a, b = json.loads(stored), json.loads(space.to_json())
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    raise SweepError(
        f"study {name!r} already exists with a different search space (differs in "
        f"{', '.join(diff)}; it was made from {study.user_attrs.get('space_file')}). "
        "Use another --study name, or the original space file.")
  return study


# -------------------------------------------------------- trial bookkeeping
def finished(t) -> bool:
  """Counts toward --trials: complete, pruned, or a training crash."""
  st = t.state.name
  return st in ("COMPLETE", "PRUNED") or (st == "FAIL" and bool(t.user_attrs.get("crashed")))


def _retry_trial(study, trial) -> None:
  """Re-enqueues a trial whose worker died: same params, same workdir.

  A worker can die between creating a trial and sampling its params. An
  enqueued trial (a retry) then still has its params in `fixed_params`; a
  sampled one has none, and is only failed: the next trial the sampler draws
  takes its place (a failed trial does not count toward --trials).
  """
  params = trial.params or trial.system_attrs.get("fixed_params", {})
  if not params:
    print(f"[sweep] trial {trial.number} died before it drew its params; "
          "a new trial takes its place.", flush=True)
    return
  wd = trial.user_attrs.get("workdir_of", trial.number)
  study.enqueue_trial(params, user_attrs={"workdir_of": wd, "retry_of": trial.number})
  print(f"[sweep] trial {trial.number} was left running by a dead worker; "
        f"re-enqueued (workdir {wd}).", flush=True)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:  # A reused pid that is not a sweep worker is dead to us.
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return b"sweep" in f.read()
  except OSError:
    return True


def reap_dead_local_trials(study) -> int:
  """Fails and re-enqueues RUNNING trials whose worker on this host is gone."""
  optuna = import_optuna()
  host, n = socket.gethostname(), 0
  for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
    if t.user_attrs.get("host") != host or "pid" not in t.user_attrs:
      continue
    if _pid_alive(int(t.user_attrs["pid"])):
      continue
    try:
      ok = study._storage.set_trial_state_values(  # pylint: disable=protected-access
          t._trial_id, state=optuna.trial.TrialState.FAIL)  # pylint: disable=protected-access
    except optuna.exceptions.UpdateFinishedTrialError:
      ok = False
    if ok:
      _retry_trial(study, t)
      n += 1
  return n
