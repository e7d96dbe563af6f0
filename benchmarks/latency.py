"""Single-image latency and batched throughput of `Predictor` on this machine.

    JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache python benchmarks/latency.py --out latency.json

The model has the im2markup sizes of `defaults.base_config()` (CNN 64..512,
row BiLSTM 256, decoder LSTM 512, embedding 80) over a 500-token vocabulary,
randomly initialized: latency does not depend on the weights as long as the
decoded length is fixed, so the EOS logit's bias is set to -1e9 and every
sequence decodes exactly --max-len tokens (100 by default; im2latex-100k
validation formulas average 58 tokens (median 52), so this is a pessimistic "typical" length). The
image is the first 50x200 image of the embedded dataset, through the full
`predict()` path (preprocessing included). Targets: greedy p50 <= 150 ms,
beam 5 p50 <= 500 ms.

Also reports the encoder's share (the CNN + row BiLSTM alone, jitted) and
images/s through `predict()` for batches of 1, 8 and 32 images of one bucket.

With `--screenshots DIR` it times a real model (`--workdir`, default the
shipped one) on real screenshots instead (e.g. a screenshot-benchmark
condition's `formula_images_processed/`), one image per call, warm: one
reading at the old estimate, the full glyph-size search (the default, on
fine canvases; on the training buckets; and on the buckets without the shared
decoder, as in sessions 2-6), and the search with an early stop at each
`--confident` threshold (Predictor.confident_score).

    python benchmarks/latency.py --screenshots OUT/images/katex-16px/formula_images_processed \
        --n 20 --confident=-0.05,-0.1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tarfile
import time

import jax
import numpy as np
from PIL import Image

from im2latex_jax import state as state_lib
from im2latex_jax import defaults
from im2latex_jax.infer import inference
from im2latex_jax.infer import predictor as predictor_lib
from im2latex_jax.data import vocab as vocab_lib

EMBEDDED = os.path.join(os.path.dirname(vocab_lib.__file__), "embedded",
                        "formula_images_processed.tar.gz")
VOCAB_SIZE = 500
IMAGE_HW = (50, 200)


def typical_image(hw=IMAGE_HW) -> np.ndarray:
  """The first embedded dataset image of shape hw (a synthetic one if none)."""
  if os.path.exists(EMBEDDED):
    with tarfile.open(EMBEDDED) as tar:
      for member in tar:
        if member.isfile() and member.name.endswith(".png"):
          im = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("L"))
          if im.shape == hw:
            return im
  rng = np.random.default_rng(0)
  im = np.full(hw, 255, np.uint8)
  im[8:hw[0] - 8, 8:hw[1] - 8] = np.where(rng.random((hw[0] - 16, hw[1] - 16)) < 0.2, 0, 255)
  return im


def random_model(max_len: int) -> inference.LoadedModel:
  config = defaults.base_config()
  config.evals.max_decode_len = max_len
  vocab = vocab_lib.Vocab(list(vocab_lib.SPECIALS) +
                          [f"t{i}" for i in range(VOCAB_SIZE - len(vocab_lib.SPECIALS))])
  model, tx, plateau = state_lib.build_model_and_optimizer(config, len(vocab))
  state = jax.jit(state_lib.make_init_fn(model, tx, plateau, config, IMAGE_HW))(jax.random.key(0))
  params = jax.tree.map(lambda x: x, state.params)
  # Never end: every sequence decodes exactly max_len tokens.
  bias = params["cell"]["out"]["bias"]
  params["cell"]["out"]["bias"] = bias.at[vocab_lib.EOS].set(-1e9)
  variables = {"params": params, "batch_stats": state.batch_stats}
  return inference.LoadedModel(model, variables, vocab, config, 0, "random-im2markup")


def percentiles(times: list[float]) -> dict[str, float]:
  ms = np.asarray(times) * 1000
  return {"p50_ms": round(float(np.percentile(ms, 50)), 1),
          "p95_ms": round(float(np.percentile(ms, 95)), 1),
          "mean_ms": round(float(ms.mean()), 1), "runs": len(times)}


def time_calls(fn, runs: int) -> list[float]:
  fn()  # compile / warm up
  out = []
  for _ in range(runs):
    t = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t)
  return out


def _device() -> str:
  """The backend, core count and CPU model (bench.cpu_info)."""
  from im2latex_jax import bench  # pylint: disable=g-import-not-at-top
  cpu = bench.cpu_info().get("cpu_model") or platform.processor() or platform.machine()
  return f"{jax.default_backend()} x{jax.device_count()} ({os.cpu_count()} cores, {cpu})"


def screenshot_latency(args) -> dict:
  """Per-image latency of a real model on real screenshots, per policy."""
  names = sorted(f for f in os.listdir(args.screenshots) if f.endswith(".png"))[:args.n]
  images = [np.asarray(Image.open(os.path.join(args.screenshots, f)).convert("RGB"))
            for f in names]
  loaded = (predictor_lib.load_predictor(args.workdir)._loaded)  # pylint: disable=protected-access
  policies = {"one_reading": dict(scale_rounds=()),
              # The default: candidates on preprocess.canvas_ladder's fine canvases.
              "search": dict(confident_score=None),
              # Candidates on the training buckets (the default before session 9).
              "search_buckets": dict(confident_score=None, canvases="buckets"),
              # The search of sessions 2-6: on the buckets, each canvas group
              # encoded and decoded on its own (no shared decoder batch).
              "search_per_bucket": dict(confident_score=None, shared_decoding=False,
                                        canvases="buckets")}
  for t in (float(v) for v in args.confident.split(",") if v):
    policies[f"search_confident@{t:g}"] = dict(confident_score=t)
  result = {"device": _device(), "model": loaded.model_id, "images": len(images),
            "dir": args.screenshots, "loadavg_before": list(os.getloadavg())}
  preds = {name: predictor_lib.Predictor(loaded, **kw) for name, kw in policies.items()}
  for p in preds.values():  # compile every shape the timed calls need
    for im in images:
      p.predict_each([im])
  for _ in range(2):  # interleaved, so the load hits every policy alike
    for name, p in preds.items():
      times, readings = result.setdefault(name, {"times": [], "readings": []}).values()
      for im in images:
        t = time.perf_counter()
        [out] = p.predict_each([im])
        times.append(time.perf_counter() - t)
        readings.append(len(getattr(out, "readings", None) or [None]))
  for name in preds:
    r = result[name]
    result[name] = {**percentiles(r["times"]),
                    "p90_ms": round(float(np.percentile(np.asarray(r["times"]) * 1000, 90)), 1),
                    "mean_readings": round(float(np.mean(r["readings"])), 2)}
  result["loadavg_after"] = list(os.getloadavg())
  return result


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--screenshots", default=None,
                      help="time a real model on these PNGs instead (see above)")
  parser.add_argument("--workdir", default=None, help="with --screenshots: the model")
  parser.add_argument("--n", type=int, default=20, help="with --screenshots: images")
  parser.add_argument("--confident", default="-0.05",
                      help="with --screenshots: comma-separated early-stop thresholds")
  parser.add_argument("--max-len", type=int, default=100, help="tokens decoded per image")
  parser.add_argument("--runs", type=int, default=20, help="timed single-image calls")
  parser.add_argument("--beam", type=int, default=5)
  parser.add_argument("--batches", default="1,8,32", help="throughput batch sizes")
  parser.add_argument("--out", default=None, help="write the JSON here too")
  args = parser.parse_args(argv)
  if args.screenshots:
    return _emit(screenshot_latency(args), args.out)

  loaded = random_model(args.max_len)
  # One reading per image at a fixed length (no glyph-size search, no loop
  # stop): the cost of one decode. The search's cost is timed below.
  pred = predictor_lib.Predictor(loaded, scale_rounds=(), loop_span=0)
  image = typical_image()
  bucket = pred.preprocess(image).shape
  n_params = sum(x.size for x in jax.tree.leaves(loaded.variables["params"]))

  result = {
      "device": _device(), "loadavg_before": list(os.getloadavg()),
      "jax": jax.__version__,
      "model": f"im2markup base_config sizes, {n_params / 1e6:.2f} M params, "
               f"vocab {VOCAB_SIZE}, random init, EOS suppressed",
      "image_bucket": list(bucket), "decoded_tokens": args.max_len,
  }
  greedy = time_calls(lambda: pred.predict([image], beam_size=1), args.runs)
  [p] = pred.predict([image])
  assert len(p.tokens) == args.max_len, len(p.tokens)
  result["greedy"] = percentiles(greedy)
  result["greedy"]["timings_ms"] = {k: round(v * 1000, 1) for k, v in p.timings.items()}
  beam = time_calls(lambda: pred.predict([image], beam_size=args.beam),
                    max(args.runs // 2, 5))
  result[f"beam{args.beam}"] = percentiles(beam)
  # predict() as shipped: the glyph-size search reads the image at every
  # candidate scale (preprocess.SCALE_ROUNDS), each reading args.max_len tokens.
  search = predictor_lib.Predictor(loaded, loop_span=0)
  search.predict([image])  # compiles the candidates' buckets
  result["greedy_with_scale_search"] = percentiles(
      time_calls(lambda: search.predict([image], beam_size=1), max(args.runs // 2, 5)))

  # Encoder alone: its share of the greedy time.
  model, variables = loaded.model, loaded.variables
  enc_fn = jax.jit(lambda v, x, hw: model.apply(v, x, hw, method=model.encode)["memory"])
  x = pred.preprocess(image)[None, :, :, None]
  hw = np.array([bucket], np.int32)
  enc = time_calls(lambda: enc_fn(variables, x, hw).block_until_ready(), args.runs)
  result["encoder_only"] = percentiles(enc)
  result["encoder_share_of_greedy"] = round(
      float(np.median(enc)) / float(np.median(greedy)), 3)

  throughput = {}
  for b in (int(s) for s in args.batches.split(",")):
    runs = max(2, min(args.runs, 64 // b))
    times = time_calls(lambda: pred.predict([image] * b, beam_size=1), runs)
    throughput[f"batch{b}"] = {"images_per_s": round(b / float(np.median(times)), 1),
                               "p50_ms": round(float(np.median(times)) * 1000, 1)}
  result["greedy_throughput"] = throughput
  result["loadavg_after"] = list(os.getloadavg())
  result["targets"] = {"greedy_p50_ms": 150, f"beam{args.beam}_p50_ms": 500,
                       "greedy_with_scale_search_p50_ms": 300}
  return _emit(result, args.out)


def _emit(result: dict, out: str | None) -> dict:
  """Prints the result as JSON (and writes it to `out`); returns it."""
  text = json.dumps(result, indent=2)
  print(text)
  if out:
    with open(out, "w") as f:
      f.write(text + "\n")
  return result


if __name__ == "__main__":
  jax.config.update("jax_compilation_cache_dir",
                    os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/jaxcache"))
  main()
