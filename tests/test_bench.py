"""`im2latex-jax bench` on a tiny config: every JSON key, no recompilation."""

import json

import pytest

from im2latex_jax import bench

TINY = ["--config.model.cnn_features=(4,8,8,8,16,16)", "--config.model.encoder_hidden=8",
        "--config.model.decoder_hidden=16", "--config.model.embed_dim=8",
        "--config.model.max_rows=8", "--config.input.buckets=16x64",
        "--config.input.token_buckets=(6,12)", "--config.input.batch_size=8",
        "--config.input.fake.examples_per_key=16", "--config.input.fake.vocab_size=20",
        "--config.evals.max_decode_len=6"]


def test_bench_writes_every_key_and_never_recompiles(tmp_path):
  out = tmp_path / "bench.json"
  rc = bench.main(["bench", *TINY, "--steps", "2",
                   "--decode_reps", "2", "--skip-torch", "--skip_tfdata",
                   "--out", str(out)])
  assert rc == 0
  r = json.loads(out.read_text())
  assert set(r) >= {"machine", "config", "peak", "shapes", "train", "cnn", "decoding",
                    "input", "wall_s"}
  t = r["train"]
  assert set(t["keys"]) == {"16x64/T8", "16x64/T14"}
  # Two keys, each traced once during warm-up, none after.
  assert t["retraces_after_warmup"] == 0 and t["traces"] == 2
  for k in t["keys"].values():
    assert {"step_s", "samples_per_s", "compile_s", "flops_per_step", "frac_of_peak"} <= set(k)
    assert k["flops_per_step"] > 0 and k["samples_per_s"] > 0
  assert t["losses_finite"]
  assert r["shapes"]["distinct_shapes"] == 2
  assert r["cnn"]["fwd_bwd"]["flops"] > r["cnn"]["fwd"]["flops"] > 0
  d = r["decoding"]
  assert d["single_greedy"]["p95_ms"] >= d["single_greedy"]["p50_ms"] > 0
  assert d["single_beam5"]["p50_ms"] > 0
  assert set(d["batched_greedy_images_per_s"]) == {"1", "8"}
  assert r["input"]["shards_loader_images_per_s"] > 0
  assert r["peak"]["fp32"]["flops_per_s"] > 0


def test_foreign_load_counts_other_processes_not_this_one(monkeypatch):
  """ForeignLoad: all CPUs' busy time minus this process's CPU time, as a
  share of cores x wall (a load average would count both). Hand-computed on
  fake clocks: the real ones are shared with the other pytest worker."""
  import types  # pylint: disable=g-import-not-at-top
  clock = {"wall": 100.0, "cpu": 10.0, "busy": 500.0}
  monkeypatch.setattr(bench, "time", types.SimpleNamespace(
      perf_counter=lambda: clock["wall"], process_time=lambda: clock["cpu"]))
  monkeypatch.setattr(bench, "os", types.SimpleNamespace(
      getloadavg=lambda: (1.5, 0.0, 0.0), cpu_count=lambda: 2))
  monkeypatch.setattr(bench, "_cpu_ticks", lambda: (clock["busy"], 0.0))
  with bench.ForeignLoad() as load:
    # 2 s of wall time; the CPUs were busy 3 s, 1 s of it this process's.
    clock.update(wall=102.0, cpu=11.0, busy=503.0)
  assert load.share == 0.5  # others: 2 of the 4 core-seconds
  with bench.ForeignLoad() as alone:
    # This process alone kept both cores busy (two threads): nobody else.
    clock.update(wall=104.0, cpu=15.0, busy=507.0)
  assert alone.share == 0.0 and alone.load_before == 1.5
  monkeypatch.setattr(bench, "_cpu_ticks", lambda: None)  # no /proc/stat
  with bench.ForeignLoad() as unknown:
    clock.update(wall=105.0)
  assert unknown.share is None


def test_unreliable_ratio_has_no_headline():
  tr = {"rounds": 3, "median_s": {"train": {"jax_fp32": 1.0, "torch_fp32": 2.0},
                                  "greedy": {"jax_fp32": 1.0, "torch_fp32": 1.0}},
        "load_before": 0.1, "load_after": 2.0, "foreign_cpu_share": 0.0,
        "jax_speed": {"train_vs_torch_fp32": {"median": 2.0, "min": 1.9, "max": 2.1}},
        "reliable": False, "unreliable_because": ["only 3 rounds (at least 5 for a headline)"]}
  text = "\n".join(bench._torch_summary(tr, {"cpu_model": "X"}))  # pylint: disable=protected-access
  assert "UNRELIABLE" in text and "only 3 rounds" in text and "JAX speed (" not in text
  tr.update(reliable=True, unreliable_because=[])
  text = "\n".join(bench._torch_summary(tr, {"cpu_model": "X"}))  # pylint: disable=protected-access
  assert "train vs torch_fp32 2.00x (1.90-2.10)" in text and "UNRELIABLE" not in text


def test_reliability_rules():
  assert bench.unreliable_because(7, 0.3, 0.05, 2) == []
  assert bench.unreliable_because(4, 0.3, 0.05, 2) == ["only 4 rounds (at least 5 for a headline)"]
  assert bench.unreliable_because(7, 1.2, 0.05, 2) == ["load average 1.20 before the run on 2 cores"]
  assert bench.unreliable_because(7, 0.3, 0.40, 2) == ["other processes took 40% of the CPUs during it"]


def test_outside_a_checkout_bench_asks_for_a_config(tmp_path, monkeypatch, capsys):
  # An installed wheel has no configs/ or benchmarks/ beside the package.
  from im2latex_jax import analysis, defaults  # pylint: disable=g-import-not-at-top
  assert defaults.repo_file("configs/fake_bench.py")  # this checkout has it
  monkeypatch.setattr(defaults, "CHECKOUT", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  assert defaults.repo_file("configs/fake_bench.py") is None
  assert bench.main(["bench", "--skip-torch"]) == 2
  err = capsys.readouterr().err
  assert "configs/fake_bench.py is not found" in err and "--config FILE" in err
  with pytest.raises(FileNotFoundError, match="IM2LATEX_WORKDIR"):
    analysis.quickstart_config()
  # From the current directory's checkout it is found again.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "fake_bench.py").write_text("")
  assert defaults.repo_file("configs/fake_bench.py") == str(tmp_path / "configs" / "fake_bench.py")
