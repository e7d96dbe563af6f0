"""`im2latex-jax bench` on a tiny config: every JSON key, no recompilation."""

import json

from im2latex_jax import bench

TINY = ["--config.model.cnn_features=(4,8,8,8,16,16)", "--config.model.encoder_hidden=8",
        "--config.model.decoder_hidden=16", "--config.model.embed_dim=8",
        "--config.model.max_rows=8", "--config.input.buckets=16x64",
        "--config.input.token_buckets=(6,12)", "--config.input.batch_size=8",
        "--config.input.fake.examples_per_key=16", "--config.input.fake.vocab_size=20",
        "--config.evals.max_decode_len=6"]


def test_bench_writes_every_key_and_never_recompiles(tmp_path):
  out = tmp_path / "bench.json"
  rc = bench.main(["bench", "--config", bench.DEFAULT_CONFIG, *TINY, "--steps", "2",
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
