"""The greedy loop with the training cell's step vs the decoding step, interleaved.

    python benchmarks/decoder_step.py [--batches 1,32] [--rounds 25] [--out decoder_step.json]

Both greedy loops decode exactly --max-len tokens (the EOS logit suppressed)
over one encoding of a 50x200 image with the random im2markup-size model of
benchmarks/latency.py:

- "cell": `LuongDecoderCell.__call__` (the teacher-forced training step) with
  its weights computed once: five matrix products a step (o W_o, h W_h,
  combine, out; the token-gate table is a gather);
- "decode": `LuongDecoderCell.decode`, what `decode_step` and every decoding
  loop run: h [W_h | combine's h rows] and o [W_o | out] regrouped, the
  gates' share of (h, o) carried to the next step, and attention over
  memory · combine's context rows (computed once per call): two products a
  step.

Each round times --calls calls of each side in alternation (order flipped every
round); prints the per-side medians and the median cell/decode ratio with its
min-max, whether both read the same tokens, the CPU and the load, and which
the bench's reliability rules (`bench.unreliable_because`) reject.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import latency  # pylint: disable=g-import-not-at-top,wrong-import-position

from im2latex_jax import bench  # pylint: disable=wrong-import-position
from im2latex_jax.data import vocab as vocab_lib  # pylint: disable=wrong-import-position
from im2latex_jax.infer import decode  # pylint: disable=wrong-import-position
from im2latex_jax.infer import inference  # pylint: disable=wrong-import-position


def greedy_fns(loaded, batch: int, max_len: int):
  """{'cell': jit(fn), 'decode': jit(fn)}: (variables, enc) -> tokens."""
  model = loaded.model

  def cell_loop(variables, enc):
    weights = model.apply(variables, method=lambda m: m.cell.weights())

    def step(carry, tokens):
      carry, (logits, attn) = model.apply(
          variables, enc, carry, tokens, weights,
          method=lambda m, e, c, t, w: m.cell(e, c, t, weights=w))
      return logits, carry, attn
    carry = model.apply(variables, enc, method=model.init_carry)[:2]  # ((c, h), o)
    return decode.greedy_search(step, carry, batch, bos_id=vocab_lib.BOS,
                                eos_id=vocab_lib.EOS, max_len=max_len).tokens

  decode_loop = inference.make_greedy_fn(model, max_len=max_len)
  return {"cell": jax.jit(cell_loop),
          "decode": jax.jit(lambda variables, enc: decode_loop(variables, enc)["tokens"])}


def compare(batch: int, rounds: int, calls: int, max_len: int) -> dict:
  loaded = latency.random_model(max_len)
  image = latency.typical_image().astype(np.float32)
  images = np.repeat(image[None, :, :, None], batch, 0)
  hw = np.array([image.shape] * batch, np.int32)
  enc = inference.make_encode_fn(loaded.model)(loaded.variables, images, hw)
  fns = greedy_fns(loaded, batch, max_len)
  tokens = {k: np.asarray(f(loaded.variables, enc)) for k, f in fns.items()}  # compiles
  times = {k: [] for k in fns}
  with bench.ForeignLoad() as load:
    for r in range(rounds):
      for name in (list(fns) if r % 2 else list(fns)[::-1]):
        med, _ = bench._median_time(lambda f=fns[name]: f(loaded.variables, enc), calls,  # pylint: disable=protected-access
                                    warmup=0)
        times[name].append(1000 * med)
  ratio = np.array(times["cell"]) / np.array(times["decode"])
  cores = len(os.sched_getaffinity(0))
  return {"batch": batch, "tokens": max_len, "rounds": rounds, "calls_per_round": calls,
          "same_tokens": bool((tokens["cell"] == tokens["decode"]).all()),
          "cell_ms": round(float(np.median(times["cell"])), 2),
          "decode_ms": round(float(np.median(times["decode"])), 2),
          "cell_over_decode": {"median": round(float(np.median(ratio)), 3),
                               "min": round(float(ratio.min()), 3),
                               "max": round(float(ratio.max()), 3)},
          "load_before": load.load_before, "load_after": load.load_after,
          "foreign_cpu_share": load.share,
          "unreliable": bench.unreliable_because(rounds, load.load_before, load.share, cores)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batches", default="1,32")
  p.add_argument("--rounds", type=int, default=25)
  p.add_argument("--calls", type=int, default=8, help="timed calls per side per round")
  p.add_argument("--max-len", type=int, default=100)
  p.add_argument("--out", default=None)
  args = p.parse_args()
  result = {"machine": bench.machine(),
            "runs": [compare(int(b), args.rounds, args.calls, args.max_len)
                     for b in args.batches.split(",")]}
  for r in result["runs"]:
    s = r["cell_over_decode"]
    print(f"batch {r['batch']}, {r['tokens']} tokens: cell {r['cell_ms']} ms, decode "
          f"{r['decode_ms']} ms, cell/decode {s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f}), "
          f"same tokens {r['same_tokens']}, load {r['load_before']:.2f} -> {r['load_after']:.2f}"
          + (f"  UNRELIABLE: {'; '.join(r['unreliable'])}" if r["unreliable"] else ""))
  print(f"{result['machine'].get('cpu_model')}, {result['machine']['cpu_cores']} cores")
  text = json.dumps(result, indent=2)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
