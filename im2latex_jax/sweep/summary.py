"""A sweep's summary: trials.csv, trials.md and Optuna's plots in the study folder."""

from __future__ import annotations

import csv
import json
import os

from im2latex_jax.sweep import space as sweep_space
from im2latex_jax.sweep import study as study_lib
from im2latex_jax.sweep.space import Space


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
  optuna = study_lib.import_optuna()
  url = args.storage or study_lib.default_storage(args.root, args.study)
  storage = study_lib.open_storage(url)
  try:
    study = optuna.load_study(study_name=args.study, storage=storage)
  except KeyError:
    raise study_lib.SweepError(f"no study {args.study!r} in {url}.") from None
  space = sweep_space.load_space(args.space) if args.space else None
  write_summary(study, space, study_lib.study_dir(args.root, args.study))
  return 0


