"""`im2latex-jax sweep`: grid and Bayesian hyper-parameter search on Optuna.

  im2latex-jax sweep --space configs/sweeps/quickstart_bayes.py --study lr1 \
      [--root ./sweeps] [--storage URL] [--workers N] [--trials T] [--dry-run]
  im2latex-jax sweep --summary --study lr1 [--root ./sweeps] [--storage URL]

Each trial is an ordinary training run in a subprocess,
`python -m im2latex_jax.main train --config <base> --workdir <root>/<study>/<n>
--config.k=v ...`, logging to `<workdir>/train.log`. While it runs, the
worker reads its metrics.jsonl, reports the space's metric to Optuna and kills
the run when the pruner (MedianPruner) says so.

Workers: `--workers N` starts N `sweep --worker` processes that share one study
through the storage (default SQLite `<root>/<study>/study.db`; PostgreSQL/MySQL
URLs pass through, so workers on other VMs can join with the same command).

Resuming: rerunning the command continues the study. `--trials T` counts
finished trials (complete, pruned, or crashed); finished ones are never rerun.
A trial left RUNNING by a killed sweep is failed and its params re-enqueued
with the same workdir, so its training resumes from its last checkpoint:
  - on this host at once (the worker pid recorded in the trial is dead);
  - from any other host through Optuna's RDB heartbeat (`heartbeat_interval`,
    `grace_period`): a trial whose worker stopped beating is failed by the next
    worker to start a trial, and the same re-enqueue callback runs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from im2latex_jax import workdir as workdir_lib
from im2latex_jax.sweep import space as sweep_space
from im2latex_jax.sweep.space import Space, SpaceError

DEFAULT_ROOT = "sweeps"
POLL_S = 1.0


class SweepError(ValueError):
  """A user error: printed as one line."""


class TrialCrashed(RuntimeError):
  """The training subprocess exited non-zero (recorded as FAIL)."""


def _optuna():
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
  optuna = _optuna()
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
  optuna = _optuna()
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
  optuna = _optuna()

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
  optuna = _optuna()
  kind = space.pruner.get("kind", "none" if space.sampler == "grid" else "median")
  if kind == "none":
    return optuna.pruners.NopPruner()
  return optuna.pruners.MedianPruner(
      n_startup_trials=int(space.pruner.get("n_startup_trials", 2)),
      n_warmup_steps=int(space.pruner.get("n_warmup_steps", 0)))


def load_or_create_study(space: Space, name: str, storage, create: bool = True):
  """The study; its stored space must equal `space`."""
  optuna = _optuna()
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
def _finished(t) -> bool:
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
  optuna = _optuna()
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


def _die_with_parent():
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
  optuna = _optuna()

  def objective(trial) -> float:
    if lock is not None:
      lock.release()  # The trial exists now; other local workers may ask.
    params = sweep_space.suggest(trial, space)
    number = trial.user_attrs.get("workdir_of", trial.number)
    workdir = os.path.join(study_dir(root, study_name), str(number))
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
                              preexec_fn=_die_with_parent)
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
  optuna = _optuna()
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  storage = open_storage(storage_url, heartbeat_s, grace_s)
  study = load_or_create_study(space, study_name, storage, create=False)
  lock = _FileLock(os.path.join(study_dir(root, study_name), ".worker.lock"))
  objective = make_objective(space, study_name, root, lock)
  while True:
    lock.acquire()
    try:
      reap_dead_local_trials(study)
      optuna.storages.fail_stale_trials(study)
      ts = study.get_trials(deepcopy=False)
      done = sum(_finished(t) for t in ts)
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


def _prepare_data(space: Space) -> None:
  """Builds the TFDS data once here, so parallel first trials do not race on it."""
  cfg = sweep_space.load_base_config(space.config_path)
  inp = {k.split(".", 1)[1]: v for k, v in space.fixed.items() if k.startswith("input.")}
  if any(k.split(".", 1)[0] == "input" for k in space.params):
    return  # The data source varies per trial; each trial prepares its own.
  with cfg.unlocked():
    for k, v in inp.items():
      if k in ("manual_dir", "data_dir"):
        cfg.input[k] = v
  from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  input_pipeline.get_builder(cfg.input)


def _worker_cmd(args, storage_url: str, trials: int) -> list[str]:
  return [sys.executable, "-m", "im2latex_jax.main", "sweep", "--worker",
          "--space", os.path.abspath(args.space), "--study", args.study,
          "--root", os.path.abspath(args.root), "--storage", storage_url,
          "--trials", str(trials), "--heartbeat", str(args.heartbeat),
          "--grace-period", str(args.grace_period)]


def run_sweep(args) -> int:
  space = sweep_space.load_space(args.space)
  trials = args.trials or space.trials
  if space.sampler == "grid":
    if args.trials and args.trials != space.grid_size():
      raise SweepError(f"--trials {args.trials}: a grid sweep runs its {space.grid_size()} "
                       "points exactly; drop --trials.")
    trials = space.grid_size()
  if not trials:
    raise SweepError(f"{args.space} gives no 'trials'; pass --trials T.")
  if args.workers < 1:
    raise SweepError(f"--workers {args.workers} must be at least 1.")
  if args.workers > trials:
    raise SweepError(f"--workers {args.workers} is more than the {trials} trials wanted; "
                     f"use --workers {trials} or fewer (or raise --trials).")
  sdir = study_dir(args.root, args.study)
  url = args.storage or default_storage(args.root, args.study)

  if args.dry_run:
    print(f"study {args.study}: {space.sampler} over {sorted(space.params)} "
          f"({space.direction} {space.metric}), {trials} trials, {args.workers} workers")
    print(f"storage {url}\nworkdirs {sdir}/<trial number>")
    for i in range(args.workers):
      print("worker:", " ".join(_worker_cmd(args, url, trials)))
    if space.sampler == "grid":
      points = space.grid_points()
    else:
      points = [{k: (f"<one of {v}>" if isinstance(v, list) else
                     f"<{v['low']}..{v['high']}{' log' if v['log'] else ''}>")
                 for k, v in space.params.items()}]
    for n, p in enumerate(points):
      print("trial:", " ".join(train_command(space, os.path.join(sdir, str(n)), p)))
    return 0

  os.makedirs(sdir, exist_ok=True)
  storage = open_storage(url, args.heartbeat, args.grace_period)
  study = load_or_create_study(space, args.study, storage, create=True)
  reaped = reap_dead_local_trials(study)
  ts = study.get_trials(deepcopy=False)
  done = sum(_finished(t) for t in ts)
  print(f"[sweep] study {args.study} in {url}: {done} of {trials} trials finished"
        + (f", {reaped} interrupted trials re-enqueued" if reaped else "") + ".", flush=True)
  t0 = time.time()
  if done < trials and args.workers > 1:
    _prepare_data(space)
  if done < trials:
    if args.workers == 1:
      run_worker(space, args.study, args.root, url, trials, args.heartbeat, args.grace_period)
    else:
      procs = [subprocess.Popen(_worker_cmd(args, url, trials), preexec_fn=_die_with_parent)
               for _ in range(args.workers)]
      rcs = [p.wait() for p in procs]
      if any(rcs):
        sys.stderr.write(f"warning: worker exit codes {rcs}\n")
  print(f"[sweep] {args.study}: done in {time.time() - t0:.0f}s.", flush=True)
  write_summary(study, space, sdir)
  return 0


# ------------------------------------------------------------- the summary
def write_summary(study, space: Space | None, out_dir: str) -> list[str]:
  """trials.csv, trials.md and PNG plots in `out_dir`; returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  metric = space.metric if space else json.loads(study.user_attrs.get("space", "{}")).get(
      "metric", "value")
  rows = []
  for t in study.get_trials(deepcopy=False):
    wall = ((t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None)
    rows.append({"number": t.number, "state": t.state.name,
                 metric: "" if t.value is None else f"{t.value:.6g}",
                 "overrides": " ".join(f"{k}={v}" for k, v in t.params.items()),
                 "wall_time_s": "" if wall is None else f"{wall:.1f}",
                 "workdir": t.user_attrs.get("workdir", ""),
                 "note": (t.user_attrs.get("error") or
                          (f"retry of {t.user_attrs['retry_of']}" if "retry_of" in t.user_attrs
                           else ""))})
  cols = ["number", "state", metric, "overrides", "wall_time_s", "workdir", "note"]
  paths = [os.path.join(out_dir, "trials.csv"), os.path.join(out_dir, "trials.md")]
  with open(paths[0], "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
  with open(paths[1], "w", encoding="utf-8") as f:
    f.write(f"# Study {study.study_name}\n\n")
    try:
      b = study.best_trial
      f.write(f"Best: trial {b.number}, {metric} = {b.value:.6g}, {b.params}\n\n")
    except ValueError:
      f.write("No completed trial yet.\n\n")
    f.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
    for r in rows:
      f.write("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |\n")
  paths += _plots(study, out_dir)
  print(f"[sweep] summary: {', '.join(paths)}", flush=True)
  return paths


def _plots(study, out_dir: str) -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  from optuna.visualization import matplotlib as vis  # pylint: disable=g-import-not-at-top
  complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
  n_params = len({k for t in complete for k in t.params})
  plots = [("history", vis.plot_optimization_history)]
  if n_params >= 2 and len(complete) >= 3:
    plots.append(("importance", vis.plot_param_importances))
  if n_params >= 1 and len(complete) >= 2:
    plots.append(("parallel", vis.plot_parallel_coordinate))
  out = []
  for name, fn in plots:
    path = os.path.join(out_dir, f"{name}.png")
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = fn(study)
      fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
      fig.savefig(path, dpi=100, bbox_inches="tight")
      plt.close(fig)
      out.append(path)
    except Exception as e:  # pylint: disable=broad-except
      print(f"[sweep] plot {name} skipped: {e}", flush=True)
  return out


def run_summary(args) -> int:
  optuna = _optuna()
  url = args.storage or default_storage(args.root, args.study)
  storage = open_storage(url)
  try:
    study = optuna.load_study(study_name=args.study, storage=storage)
  except KeyError:
    raise SweepError(f"no study {args.study!r} in {url}.") from None
  space = sweep_space.load_space(args.space) if args.space else None
  write_summary(study, space, study_dir(args.root, args.study))
  return 0


# ------------------------------------------------------------------- CLI
def parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog=argv[0], description=__doc__.split("\n\n")[0])
  p.add_argument("--space", help="configs/sweeps/<name>.py")
  p.add_argument("--study", required=True, help="study name (also the wandb group)")
  p.add_argument("--root", default=DEFAULT_ROOT, help="trial workdirs go to ROOT/STUDY/N")
  p.add_argument("--storage", help="Optuna RDB URL (default sqlite ROOT/STUDY/study.db)")
  p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
  p.add_argument("--trials", type=int, help="finished trials wanted in total")
  p.add_argument("--dry-run", action="store_true", help="print the commands only")
  p.add_argument("--summary", action="store_true", help="only write the summary")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--heartbeat", type=int, default=10, help="trial heartbeat, seconds")
  p.add_argument("--grace-period", type=int, default=60,
                 help="a trial with no heartbeat for this long is re-run, seconds")
  args = p.parse_args(argv[1:])
  if not args.summary and not args.space:
    p.error("--space is required (except with --summary)")
  if args.grace_period <= args.heartbeat:
    p.error("--grace-period must be longer than --heartbeat")
  return args


def main(argv: list[str]) -> int:
  try:
    args = parse_args(argv)
  except SystemExit as e:
    return int(e.code or 0)
  try:
    if args.summary:
      return run_summary(args)
    if args.worker:
      space = sweep_space.load_space(args.space)
      return run_worker(space, args.study, args.root, args.storage, args.trials,
                        args.heartbeat, args.grace_period)
    return run_sweep(args)
  except (SweepError, SpaceError) as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  except KeyboardInterrupt:
    sys.stderr.write("interrupted; rerun the same command to resume.\n")
    return 130
