"""`im2latex-jax sweep`: grid and Bayesian hyper-parameter search on Optuna.

  im2latex-jax sweep --space configs/sweeps/quickstart_bayes.py --study lr1 \
      [--root ./sweeps] [--storage URL] [--workers N] [--trials T] [--dry-run]
  im2latex-jax sweep --summary --study lr1 [--root ./sweeps] [--storage URL]

Each trial is an ordinary training run in a subprocess, logging to
`<root>/<study>/<n>/train.log`, watched and pruned by its worker (trials.py).

Workers: `--workers N` starts N `sweep --worker` processes that share one study
through the storage (default SQLite `<root>/<study>/study.db`; PostgreSQL/MySQL
URLs pass through, so workers on other VMs can join with the same command).

Resuming: rerunning the command continues the study. `--trials T` counts
finished trials (complete, pruned, or crashed); finished ones are never rerun.
A trial left RUNNING by a killed sweep is re-run in its own workdir, so its
training resumes from its last checkpoint (study.py). The summary is
trials.csv, trials.md and plots in `<root>/<study>/` (summary.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from im2latex_jax.sweep import space as sweep_space
from im2latex_jax.sweep import study as study_lib
from im2latex_jax.sweep import summary as summary_lib
from im2latex_jax.sweep import trials as trials_lib
from im2latex_jax.sweep.space import Space, SpaceError
from im2latex_jax.sweep.study import SweepError

DEFAULT_ROOT = "sweeps"


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
  sdir = study_lib.study_dir(args.root, args.study)
  url = args.storage or study_lib.default_storage(args.root, args.study)

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
      print("trial:", " ".join(trials_lib.train_command(space, os.path.join(sdir, str(n)), p)))
    return 0

  os.makedirs(sdir, exist_ok=True)
  storage = study_lib.open_storage(url, args.heartbeat, args.grace_period)
  study = study_lib.load_or_create_study(space, args.study, storage, create=True)
  reaped = study_lib.reap_dead_local_trials(study)
  ts = study.get_trials(deepcopy=False)
  done = sum(study_lib.finished(t) for t in ts)
  print(f"[sweep] study {args.study} in {url}: {done} of {trials} trials finished"
        + (f", {reaped} interrupted trials re-enqueued" if reaped else "") + ".", flush=True)
  t0 = time.time()
  if done < trials and args.workers > 1:
    _prepare_data(space)
  if done < trials:
    if args.workers == 1:
      trials_lib.run_worker(space, args.study, args.root, url, trials, args.heartbeat,
                            args.grace_period)
    else:
      procs = [subprocess.Popen(_worker_cmd(args, url, trials),
                                preexec_fn=trials_lib.die_with_parent)
               for _ in range(args.workers)]
      rcs = [p.wait() for p in procs]
      if any(rcs):
        sys.stderr.write(f"warning: worker exit codes {rcs}\n")
  print(f"[sweep] {args.study}: done in {time.time() - t0:.0f}s.", flush=True)
  summary_lib.write_summary(study, space, sdir)
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
      return summary_lib.run_summary(args)
    if args.worker:
      space = sweep_space.load_space(args.space)
      return trials_lib.run_worker(space, args.study, args.root, args.storage, args.trials,
                        args.heartbeat, args.grace_period)
    return run_sweep(args)
  except (SweepError, SpaceError) as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  except KeyboardInterrupt:
    sys.stderr.write("interrupted; rerun the same command to resume.\n")
    return 130
