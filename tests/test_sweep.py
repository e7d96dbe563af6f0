"""Sweeps: spaces validate against the config; Bayesian and grid sweeps run,
resume after SIGKILL without repeating finished trials; bad input fails early."""

import csv
import glob
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from im2latex_jax.sweep import cli as sweep_cli
from im2latex_jax.sweep import study as sweep
from im2latex_jax.sweep import space as sweep_space

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.py"
# How long a sweep subprocess may go without finishing before it counts as hung.
# Only a guard: a trial is a fresh process (imports, TFDS, two compiles) and
# CI's 2 cores also run the other pytest worker; 240 s was once too short.
HANG = 900

# The tiny model of conftest.tiny_config on one (image, token) bucket, so a
# trial compiles one train and one eval shape and takes seconds.
TINY_FIXED = {
    "model.cnn_features": (4, 8, 8, 8, 16, 16), "model.encoder_hidden": 8,
    "model.embed_dim": 8, "input.batch_size": 8, "input.eval_batch_size": 16,
    "input.buckets": "50x240", "input.token_buckets": (40,), "input.cache": False,
    "input.shuffle_buffer": 16, "wandb.mode": "disabled", "log_every_steps": 2,
}


def write_space(tmp_path, name="tiny.py", sampler="bayes", params=None, steps=4,
                extra="") -> str:
  params = params or {"optim.lr": {"low": 1e-3, "high": 1e-2, "log": True},
                      "model.decoder_hidden": [8, 16]}
  fixed = dict(TINY_FIXED, num_train_steps=steps, eval_every_steps=steps // 2)
  # A grid runs exhaustively (no pruner); the Bayesian sweep prunes.
  pruner = "dict(kind='none')" if sampler == "grid" else "dict(kind='median', n_startup_trials=2)"
  path = tmp_path / name
  path.write_text(
      "def get_space():\n"
      f"  return dict(config={str(QUICKSTART)!r}, metric='eval/loss', direction='min',\n"
      f"              sampler={sampler!r}, params={params!r}, fixed={fixed!r},\n"
      f"              trials=4, seed=0, pruner={pruner}"
      f"{extra})\n")
  return str(path)


def _env(tmp_path):
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache")
  env["WANDB_MODE"] = "disabled"
  env.pop("XLA_FLAGS", None)  # one CPU device per trial, as a user would run it
  return env


def _cli(*args):
  return [sys.executable, "-m", "im2latex_jax.main", "sweep", *map(str, args)]


def _study(root, name):
  import optuna  # pylint: disable=g-import-not-at-top
  return optuna.load_study(study_name=name, storage=sweep.default_storage(root, name))


# ------------------------------------------------------------------- fast
@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "configs/sweeps/*.py"))))
def test_every_sweep_names_existing_keys(path):
  space = sweep_space.load_space(path)
  assert space.params and space.metric.startswith("eval/")
  if space.sampler == "grid":
    assert space.trials == space.grid_size() == len(space.grid_points())


@pytest.mark.parametrize("params,fixed,msg", [
    ({"optim.lrr": [0.1]}, {}, "'optim.lrr' does not exist"),
    ({"nope.lr": [0.1]}, {}, "'nope.lr' does not exist"),
    ({"optim.lr": [0.1]}, {"eval_max_examples": 10}, "is None in the base config"),
    ({"model.decoder_hidden": ["big"]}, {}, "holds a int"),
    ({"optim": [1]}, {}, "is a group"),
    ({"optim.lr": {"low": 0.0, "high": 1.0, "log": True}}, {}, "needs low > 0"),
])
def test_bad_space_fails_before_any_trial(tmp_path, params, fixed, msg):
  p = tmp_path / "bad.py"
  p.write_text(f"def get_space():\n  return dict(config={str(QUICKSTART)!r}, "
               f"metric='eval/loss', params={params!r}, fixed={fixed!r}, trials=2)\n")
  with pytest.raises(sweep_space.SpaceError, match=msg):
    sweep_space.load_space(str(p))
  rc = sweep_cli.main(["sweep", "--space", str(p), "--study", "s", "--root", str(tmp_path)])
  assert rc == 2
  assert not (tmp_path / "s").exists(), "nothing may be created for a bad space"


def test_decode_metric_needs_decoding_evals(tmp_path):
  p = tmp_path / "bleu.py"
  p.write_text(f"def get_space():\n  return dict(config={str(QUICKSTART)!r}, "
               "metric='eval/bleu4', direction='max', params={'optim.lr': [0.1]})\n")
  with pytest.raises(sweep_space.SpaceError, match="decode_every_steps"):
    sweep_space.load_space(str(p))


def test_cli_errors_are_one_line(tmp_path, capfd):
  space = write_space(tmp_path)
  grid = write_space(tmp_path, "grid.py", "grid", {"optim.lr": [1e-3, 2e-3]})
  cases = [
      (["--workers", "5", "--trials", "4"], "--workers 5 is more than the 4 trials"),
      (["--storage", f"sqlite:///{tmp_path}/missing/dir/x.db"], "cannot open storage"),
      (["--storage", "postgresql://u:p@127.0.0.1:1/db"], "cannot open storage"),
      (["--storage", "nosuchdb://x"], "cannot open storage"),
  ]
  for extra, msg in cases:
    rc = sweep_cli.main(["sweep", "--space", space, "--study", "s", "--root", str(tmp_path),
                     *extra])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and err and msg in err[-1], (extra, err)
    assert "Traceback" not in "\n".join(err)
  rc = sweep_cli.main(["sweep", "--space", grid, "--study", "g", "--root", str(tmp_path),
                   "--trials", "3"])
  assert rc == 2 and "runs its 2 points exactly" in capfd.readouterr().err


def test_same_study_name_with_another_space_is_refused(tmp_path, capfd):
  a = sweep_space.load_space(write_space(tmp_path, "a.py"))
  storage = sweep.open_storage(f"sqlite:///{tmp_path}/study.db")
  sweep.load_or_create_study(a, "s", storage)
  b_path = write_space(tmp_path, "b.py", params={"optim.lr": [1e-3, 1e-2]})
  rc = sweep_cli.main(["sweep", "--space", b_path, "--study", "s", "--root", str(tmp_path),
                   "--storage", f"sqlite:///{tmp_path}/study.db"])
  err = capfd.readouterr().err
  assert rc == 2 and "different search space (differs in params" in err, err
  # The same space again is fine (that is how a study resumes).
  sweep.load_or_create_study(sweep_space.load_space(str(tmp_path / "a.py")), "s", storage)


def test_dry_run_prints_commands_and_creates_nothing(tmp_path, capsys):
  grid = write_space(tmp_path, "grid.py", "grid",
                     {"optim.lr": [1e-3, 2e-3], "model.decoder_hidden": [8, 16]})
  rc = sweep_cli.main(["sweep", "--space", grid, "--study", "g", "--root", str(tmp_path / "r"),
                   "--workers", "2", "--dry-run"])
  out = capsys.readouterr().out
  assert rc == 0
  trials = [l for l in out.splitlines() if l.startswith("trial:")]
  assert len(trials) == 4 and sum(l.startswith("worker:") for l in out.splitlines()) == 2
  assert "--config.optim.lr=0.002 --config.model.decoder_hidden=16" in trials[-1]
  assert f"--workdir {tmp_path}/r/g/3" in trials[-1]
  assert "--config.input.token_buckets=(40,)" in trials[0]
  assert not (tmp_path / "r").exists()


def test_retry_of_a_dead_trial_keeps_its_params(capsys):
  """A trial a dead worker left RUNNING is re-enqueued with its params, also
  when it died before sampling them (an enqueued retry); a sampled trial that
  died before drawing any is only failed."""
  import optuna  # pylint: disable=g-import-not-at-top
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study = optuna.create_study()
  drawn = study.ask()
  drawn.suggest_float("optim.lr", 1e-3, 1e-2)
  study.enqueue_trial({"optim.lr": 0.005}, user_attrs={"workdir_of": 0, "retry_of": 0})
  enqueued = study.ask()  # killed before it called suggest: params {} so far
  blank = study.ask()
  frozen = {t.number: t for t in study.get_trials()}
  assert frozen[enqueued.number].params == {} and frozen[blank.number].params == {}
  for n in (drawn.number, enqueued.number, blank.number):
    sweep._retry_trial(study, frozen[n])  # pylint: disable=protected-access
  waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
  assert [(t.user_attrs["retry_of"], t.system_attrs["fixed_params"]) for t in waiting] == [
      (drawn.number, frozen[drawn.number].params), (enqueued.number, {"optim.lr": 0.005})]
  assert waiting[1].user_attrs["workdir_of"] == 0  # the retry's retry: the first workdir
  assert f"trial {blank.number} died before it drew its params" in capsys.readouterr().out


# ------------------------------------------------------------------- slow
def _wait_for(path, text, proc, timeout):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if os.path.exists(path) and text in open(path).read():
      return
    assert proc.poll() is None, open(path).read()
    time.sleep(0.5)
  raise AssertionError(f"{text!r} not in {path} after {timeout}s:\n{open(path).read()}")


@pytest.mark.slow
def test_bayes_sweep_two_workers_survives_sigkill(tmp_path, embedded_data):
  """4 trials, 2 workers; SIGKILL the whole sweep after the first trial, rerun."""
  del embedded_data  # TFDS_DATA_DIR prepared once for the subprocesses.
  space = write_space(tmp_path, steps=6)
  root = tmp_path / "sweeps"
  cmd = _cli("--space", space, "--study", "b", "--root", root, "--workers", 2,
             "--trials", 4, "--heartbeat", 2, "--grace-period", 6)
  out1 = tmp_path / "run1.out"
  with open(out1, "w") as f:
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(tmp_path),
                         start_new_session=True)
  try:
    _wait_for(out1, "done: eval/loss", p, timeout=HANG)
    t0 = time.time()  # the worker prints "done" just before Optuna records it
    while not any(t.state.name == "COMPLETE" for t in _study(root, "b").trials):
      assert time.time() - t0 < 60
      time.sleep(0.2)
  finally:
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
  before = {t.number: t for t in _study(root, "b").trials}
  done_before = {n: t.value for n, t in before.items() if t.state.name == "COMPLETE"}
  running_before = {n for n, t in before.items() if t.state.name == "RUNNING"}
  assert done_before, "the first trial finished before the kill"

  r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=HANG)
  assert r.returncode == 0, r.stdout + r.stderr
  trials = _study(root, "b").trials
  finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
  assert len(finished) == 4, [(t.number, t.state.name) for t in trials]
  for n, v in done_before.items():  # finished trials are kept, never rerun
    assert trials[n].value == v
    log = open(os.path.join(trials[n].user_attrs["workdir"], "train.log")).read()
    assert len(re.findall(r"^# \d{4}-", log, re.M)) == 1, log[:2000]
  # A trial the kill interrupted was re-enqueued with its params and workdir;
  # one killed before it drew params is only failed.
  for n in running_before:
    assert trials[n].state.name == "FAIL"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == n]
    if not before[n].params:
      assert not retry, (n, retry)
      continue
    assert len(retry) == 1 and retry[0].params == trials[n].params
    assert retry[0].user_attrs["workdir"] == trials[n].user_attrs["workdir"]
  for name in ("trials.csv", "trials.md", "history.png"):
    assert (root / "b" / name).exists(), name
  rows = list(csv.DictReader(open(root / "b" / "trials.csv")))
  assert len(rows) == len(trials) and "eval/loss" in rows[0]


@pytest.mark.slow
def test_grid_sweep_runs_exactly_its_grid(tmp_path, embedded_data):
  del embedded_data
  grid = {"optim.lr": [1e-3, 3e-3], "model.decoder_hidden": [8, 16]}
  space = write_space(tmp_path, "grid.py", "grid", grid, steps=2)
  root = tmp_path / "sweeps"
  r = subprocess.run(_cli("--space", space, "--study", "g", "--root", root, "--workers", 2),
                     capture_output=True, text=True, env=_env(tmp_path), timeout=HANG)
  assert r.returncode == 0, r.stdout + r.stderr
  trials = _study(root, "g").trials
  assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
  got = sorted((t.params["optim.lr"], t.params["model.decoder_hidden"]) for t in trials)
  assert got == sorted((a, b) for a in grid["optim.lr"] for b in grid["model.decoder_hidden"])
  assert (root / "g" / "parallel.png").exists()
  # Rerunning a finished study starts nothing.
  r = subprocess.run(_cli("--space", space, "--study", "g", "--root", root),
                     capture_output=True, text=True, env=_env(tmp_path), timeout=HANG)
  assert r.returncode == 0 and "4 of 4 trials finished" in r.stdout
  assert len(_study(root, "g").trials) == 4


def test_grid_defaults_to_no_pruning(tmp_path):
  import optuna  # pylint: disable=g-import-not-at-top
  from im2latex_jax.sweep import space as sweep_space  # pylint: disable=g-import-not-at-top
  path = tmp_path / "g.py"
  path.write_text(
      "def get_space():\n"
      f"  return dict(config={str(QUICKSTART)!r}, metric='eval/loss', direction='min',\n"
      "              sampler='grid', params={'optim.lr': [1e-3, 3e-3]}, trials=2)\n")
  space = sweep_space.load_space(str(path))
  assert isinstance(sweep.make_pruner(space), optuna.pruners.NopPruner)
