"""XLA's convolution vs im2col vs Winograd (`config.model.conv_impl`), interleaved in one process.

    python benchmarks/conv_impl.py [--rounds 7] [--out conv_impl.json]

Times, for both implementations in alternation: the im2markup CNN's forward +
backward (batch 32, 50x200, the training case) and the encoder's forward
(CNN + row BiLSTM) at batch 1 (50x200, 100x500) and batch 32 (inference).
Random init of `defaults.base_config()`; prints medians and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from im2latex_jax import defaults
from im2latex_jax import models


def _median_ms(fns: dict, args, rounds: int) -> dict[str, float]:
  for f in fns.values():  # compile
    jax.block_until_ready(f(*args))
  times = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(f(*args))
      times[k].append(time.perf_counter() - t)
  return {k: 1000 * float(np.median(v)) for k, v in times.items()}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--out", default=None)
  p.add_argument("--impls", default="xla,im2col,winograd",
                 help="comma-separated conv_impl values to compare (the first initializes)")
  p.add_argument("--skip-encoder", action="store_true", help="only the training CNN")
  args = p.parse_args()
  cfg = defaults.base_config()
  built = {}
  for impl in args.impls.split(","):
    cfg.model.conv_impl = impl
    built[impl] = models.get_model(cfg.model, 500)
  variables = models.init_variables(next(iter(built.values())), jax.random.key(0))
  rng = np.random.default_rng(0)
  out = {"machine": {"cpu_count": os.cpu_count(), "backend": jax.default_backend(),
                     "loadavg_start": list(os.getloadavg())}, "ms": {}}

  def images(b, h, w):
    return (jnp.asarray(rng.integers(0, 256, (b, h, w, 1)), jnp.uint8),
            jnp.tile(jnp.array([[h, w]], jnp.int32), (b, 1)))

  # Training: the CNN's forward + backward (batch stats updated, as in a step).
  x, _ = images(32, 50, 200)
  train = {}
  for impl, m in built.items():
    def loss(params, x, m=m):
      feats, _ = m.apply({**variables, "params": params}, x.astype(jnp.float32) / 255.0, True,
                         method=lambda mod, x, t: mod.cnn(x, t), mutable=["batch_stats"])
      return jnp.sum(feats ** 2)
    train[impl] = jax.jit(jax.grad(loss))
  out["ms"]["cnn_fwd_bwd_b32_50x200"] = _median_ms(train, (variables["params"], x), args.rounds)
  print("CNN fwd+bwd, batch 32, 50x200:", out["ms"]["cnn_fwd_bwd_b32_50x200"])

  # Inference: the encoder forward.
  enc = {impl: jax.jit(lambda v, x, hw, m=m: m.apply(v, x, hw, method=m.encode)["memory"])
         for impl, m in built.items()}
  for b, h, w in () if args.skip_encoder else ((1, 50, 200), (1, 100, 500), (32, 50, 200)):
    name = f"encoder_b{b}_{h}x{w}"
    out["ms"][name] = _median_ms(enc, (variables, *images(b, h, w)),
                                 args.rounds if b == 1 else max(args.rounds // 2, 1))
    print(f"encoder forward, batch {b}, {h}x{w}:", out["ms"][name])
  out["machine"]["loadavg_end"] = list(os.getloadavg())
  print("load average start / end:", out["machine"]["loadavg_start"][0],
        out["machine"]["loadavg_end"][0])
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
