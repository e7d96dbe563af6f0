"""`im2latex-jax bench`: how fast the train step, decoding and input are here.

  im2latex-jax bench [--config configs/fake_bench.py[:bf16]] [--out bench.json]
                     [--steps N] [--skip-torch] [--keys all|main] [--config.x=y ...]

Prints and writes one JSON object:
- `peak`: the machine's measured matmul rate (fp32, and bf16 off CPU), the
  yardstick for every `frac_of_peak`;
- `train`: per key (bucket shape) the median step time over --steps after
  warm-up, samples/s, compile time, XLA's FLOPs per step (cost analysis of
  the compiled step) and the fraction of peak; `retraces_after_warmup` (must
  be 0: every key is compiled once, then only cache hits);
- `cnn`: the CNN alone, forward + backward on the main key: FLOPs, time and
  fraction of peak (the part that should run near peak);
- `shapes`: distinct step shapes in one epoch of the key schedule;
- `torch`: the PyTorch twin (benchmarks/torch_reference.py, fp32 and bf16
  autocast) on the same main batch, timed *interleaved* with the JAX step
  (`--rounds` rounds, each side once per round): per-round speed ratios
  (median, min-max), load before/after and the CPU share other processes
  took meanwhile; the ratio is marked unreliable (no headline) when the
  machine was not idle enough (MAX_FOREIGN_SHARE, load > cores / 2);
- `decoding`: single-image latency p50/p95 (greedy, beam 5) and batched
  images/s (benchmarks/latency.py when present, else measured here);
- `input`: images/s of the TF-free loader and of tf.data (when installed).

Needs neither TensorFlow nor wandb unless the config's loader is 'tfds'.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from im2latex_jax import defaults
from im2latex_jax import models
from im2latex_jax import state as state_lib
from im2latex_jax import steps as steps_lib
from im2latex_jax.data import core
from im2latex_jax.models import layers

# The default config, and the scripts the benchmark runs beside JAX, are files
# of the repository (defaults.repo_file), not of the installed package.
DEFAULT_CONFIG = "configs/fake_bench.py"
# The headline shape of the task: batch 32, 50x200 images, 100 target tokens.
MAIN_SHAPE = (50, 200)


# ---------------------------------------------------------------- helpers
def _median_time(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[float, list[float]]:
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times), times


def _flops(jitted, *args) -> float:
  """XLA's FLOP count of the compiled computation (0 when unavailable)."""
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def measure_peak(dtype, n: int | None = None, reps: int = 7) -> dict[str, float]:
  """FLOP/s of one large square matmul in `dtype` on the default device."""
  if n is None:
    n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  # Chain a few products in one call so launch overhead does not count.
  k = 1 if jax.default_backend() == "cpu" else 10

  @jax.jit
  def mm(a, b):
    def body(i, acc):
      return acc + jnp.dot(a + i.astype(dtype), b, preferred_element_type=jnp.float32)
    return jax.lax.fori_loop(0, k, body, jnp.zeros((n, n), jnp.float32))
  # The best of `reps`: a peak is what the machine can do, not what it did
  # while a neighbour's job ran (these cores are shared).
  _, times = _median_time(lambda: mm(a, b), reps, warmup=2)
  t = min(times)
  return {"n": n, "dtype": jnp.dtype(dtype).name, "seconds": t / k,
          "flops_per_s": 2.0 * n ** 3 * k / t,
          "median_flops_per_s": 2.0 * n ** 3 * k / statistics.median(times)}


# CPU features that decide what reduced precision can buy (lscpu's names).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_info() -> dict[str, Any]:
  """CPU model and the CPU_FLAGS it has (from /proc/cpuinfo; {} elsewhere)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      text = f.read()
  except OSError:
    return {}
  model, flags = platform.processor() or platform.machine(), set()
  for line in text.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "model name":
      model = value.strip()
    elif key.strip() == "flags":
      flags = set(value.split())
  return {"cpu_model": model, "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


def machine() -> dict[str, Any]:
  d = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": getattr(d, "device_kind", str(d)),
          "device_count": jax.device_count(),
          "cpu_cores": len(os.sched_getaffinity(0)), "processor": platform.processor()
          or platform.machine(), **cpu_info(), "jax": jax.__version__,
          "loadavg": list(os.getloadavg()), "python": platform.python_version()}


def _cpu_ticks() -> tuple[float, float] | None:
  """(busy, total) seconds of all CPUs since boot (/proc/stat), or None."""
  try:
    with open("/proc/stat", encoding="utf-8") as f:
      fields = [float(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  hz = os.sysconf("SC_CLK_TCK")
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
  return (sum(fields) - idle) / hz, sum(fields) / hz


class ForeignLoad:
  """How busy the machine was with *other* processes while a block ran.

  Load averages count this process too (a 2-thread benchmark is load ~2 by
  itself), so the fair question is how much CPU others took: all CPUs' busy
  time minus this process's CPU time, as a share of the cores x wall time.
  """

  def __enter__(self):
    self._t, self._ticks, self._own = time.perf_counter(), _cpu_ticks(), time.process_time()
    self.load_before = os.getloadavg()[0]
    return self

  def __exit__(self, *exc):
    wall = time.perf_counter() - self._t
    own = time.process_time() - self._own
    ticks = _cpu_ticks()
    self.load_after = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if self._ticks is None or ticks is None or wall <= 0:
      self.share = None
    else:
      busy = ticks[0] - self._ticks[0]
      self.share = max(busy - own, 0.0) / (cores * wall)
    return False


# ------------------------------------------------------------------- data
def _get_data(config):
  """(a batch per step shape, train counts, keys, vocab size) from the config's source."""
  from im2latex_jax.data import sources  # pylint: disable=g-import-not-at-top
  data = sources.get_data(config.input)
  it = data.train_iterator(global_batch_size=config.input.batch_size, seed=config.seed)
  active = core.active_keys(data.train_counts, config.input.batch_size, 1)
  by_key: dict[tuple, dict] = {}
  for _ in range(200 * len(active)):  # until every active key was drawn once
    b = next(it)
    by_key.setdefault((*b["image"].shape[1:3], b["tokens"].shape[1]), b)
    if len(by_key) == len(active):
      break
  return by_key, data.train_counts, data.keys, len(data.vocab)


def cnn_flops(features, batch: int, h: int, w: int) -> dict[str, float]:
  """Convolution FLOPs of the im2markup CNN, counted by hand.

  XLA's cost analysis counts convolutions on CPU but not the cuDNN calls on
  GPU, so this is the yardstick there. Forward + backward is 3x forward
  (input and weight gradients) less the input gradient of the first conv.
  """
  sizes = [(h, w), (h // 2, w // 2), (h // 4, w // 4), (h // 4, w // 4),
           (h // 8, w // 4), (h // 8, w // 8)]
  cins = (1,) + tuple(features[:-1])
  per = [2.0 * batch * hh * ww * ci * co * 9 for (hh, ww), ci, co in zip(sizes, cins, features)]
  fwd = sum(per)
  return {"fwd": fwd, "fwd_bwd": 3 * fwd - per[0]}


# ------------------------------------------------------------------ train
def bench_train(config, by_key, vocab_size, steps: int, peak: float, main_key) -> dict:
  """Per-key step time, compile time, FLOPs; retraces after warm-up."""
  from im2latex_jax import optim  # pylint: disable=g-import-not-at-top
  model, tx, plateau = state_lib.build_model_and_optimizer(config, vocab_size)
  init = state_lib.make_init_fn(model, tx, plateau, config, MAIN_SHAPE)
  state = jax.jit(init)(jax.random.key(config.seed))
  traces = [0]
  raw = steps_lib.make_train_step(model, tx, optim.make_lr_schedule(config.optim),
                              jax.random.key(1))

  def counted(state, batch):
    traces[0] += 1
    return raw(state, batch)
  step = jax.jit(counted, donate_argnums=0)
  dev = {k: jax.device_put(b) for k, b in by_key.items()}
  out: dict[str, Any] = {"keys": {}}
  # Warm-up: compile every key once (the compile time is the first call's).
  for key, batch in dev.items():
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    out["keys"]["%dx%d/T%d" % key] = {"first_call_s": time.perf_counter() - t}
  warm_traces = traces[0]
  losses, timed = [], {}
  for key, batch in dev.items():
    times = []
    for i in range(steps + 1):
      t = time.perf_counter()
      state, m = step(state, batch)
      m = jax.device_get(m)  # a host sync per step, as a log step would have
      if i:
        times.append(time.perf_counter() - t)
      losses.append(float(m["loss_sum"] / max(m["tokens"], 1)))
    timed[key] = times
  out["retraces_after_warmup"] = traces[0] - warm_traces
  for key, batch in dev.items():
    times = timed[key]
    med = statistics.median(times)
    r = out["keys"]["%dx%d/T%d" % key]
    flops = _flops(step, state, batch)
    r["xla_flops_per_step"] = flops
    if jax.default_backend() != "cpu":  # cuDNN convolutions are not in XLA's count
      b, h, w = batch["image"].shape[:3]
      flops += cnn_flops(tuple(config.model.cnn_features), b, h, w)["fwd_bwd"]
    r.update(step_s=med, step_times_s=times, samples_per_s=len(batch["tokens"]) / med,
             compile_s=max(r["first_call_s"] - med, 0.0), flops_per_step=flops,
             achieved_flops_per_s=flops / med, frac_of_peak=flops / med / peak)
  out["traces"] = traces[0]
  out["losses_finite"] = bool(np.all(np.isfinite(losses)))
  out["params"] = int(sum(x.size for x in jax.tree.leaves(state.params)))
  out["main_key"] = "%dx%d/T%d" % main_key
  out.update({f"main_{k}": v for k, v in out["keys"]["%dx%d/T%d" % main_key].items()
              if k != "step_times_s"})
  return out, model, state, step


def bench_cnn(config, batch, steps: int, peak: float) -> dict:
  """The CNN alone: forward + backward (params and BN stats) on one batch."""
  from im2latex_jax.models import im2markup  # pylint: disable=g-import-not-at-top
  from im2latex_jax.models import layers  # pylint: disable=g-import-not-at-top
  dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
  cnn = im2markup.CNN(tuple(config.model.cnn_features), dtype=dtype)
  x = layers.normalize_images(jnp.asarray(batch["image"]), jnp.asarray(batch["image_hw"]),
                              dtype)
  v = cnn.init(jax.random.key(0), x, train=False)

  @jax.jit
  def fwd_bwd(params, stats, x):
    def f(p):
      y, new = cnn.apply({"params": p, "batch_stats": stats}, x, train=True,
                         mutable=["batch_stats"])
      return jnp.mean(y.astype(jnp.float32) ** 2), new
    return jax.grad(f, has_aux=True)(params)

  @jax.jit
  def fwd(params, stats, x):
    return cnn.apply({"params": params, "batch_stats": stats}, x, train=False)

  out = {}
  analytic = cnn_flops(tuple(config.model.cnn_features), *x.shape[:3])
  for name, fn in (("fwd_bwd", fwd_bwd), ("fwd", fwd)):
    med, _ = _median_time(lambda fn=fn: fn(v["params"], v["batch_stats"], x), max(steps, 3))
    xla = _flops(fn, v["params"], v["batch_stats"], x)
    # XLA's count where it has the convolutions (CPU), else the hand count.
    flops = xla if xla >= 0.5 * analytic[name] else analytic[name]
    out[name] = {"s": med, "flops": flops, "xla_flops": xla, "analytic_flops": analytic[name],
                 "achieved_flops_per_s": flops / med, "frac_of_peak": flops / med / peak}
  return out


# --------------------------------------------------------------- decoding
def bench_decode(config, model, state, batch, reps: int) -> dict:
  """Latency p50/p95 for one image (greedy, beam 5) and batched greedy images/s."""
  from im2latex_jax.infer import inference  # pylint: disable=g-import-not-at-top
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  max_len = int(config.evals.max_decode_len)
  out: dict[str, Any] = {"max_len": max_len, "source": "im2latex_jax.bench"}

  def pct(ts):
    ms = np.asarray(ts) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "runs": len(ts)}
  for name, beam in (("greedy", 1), ("beam5", 5)):
    fn = inference.make_decode_fn(model, beam_size=beam, max_len=max_len)
    args = (variables, batch["image"][:1], batch["image_hw"][:1])
    _, ts = _median_time(lambda fn=fn, args=args: fn(*args), reps)
    out[f"single_{name}"] = pct(ts)
  fn = inference.make_decode_fn(model, beam_size=1, max_len=max_len)
  out["batched_greedy_images_per_s"] = {}
  for b in (1, 8, 32):
    if b > len(batch["tokens"]):
      continue
    med, _ = _median_time(lambda b=b: fn(variables, batch["image"][:b],
                                         batch["image_hw"][:b]), max(reps // 2, 1))
    out["batched_greedy_images_per_s"][str(b)] = b / med
    if b == 32:
      out["batch32_greedy_s"] = med
  return out


def _latency_module():
  path = defaults.repo_file("benchmarks/latency.py")
  if path is None:
    return None
  try:
    return defaults.import_file(path)
  except Exception:  # pylint: disable=broad-except
    return None


# ------------------------------------------------------------------ input
def bench_input(config, n_batches: int, with_tfdata: bool) -> dict:
  """images/s of the TF-free loader (this config) and of tf.data (embedded data)."""
  from im2latex_jax.data import shards  # pylint: disable=g-import-not-at-top
  from im2latex_jax.data import sources  # pylint: disable=g-import-not-at-top
  out = {}
  if config.input.get("loader", "tfds") != "tfds":
    data = sources.get_data(config.input)
    it = data.train_iterator(global_batch_size=config.input.batch_size, seed=config.seed)
    next(it)
    t = time.perf_counter()
    n = sum(len(next(it)["tokens"]) for _ in range(n_batches))
    out["shards_loader_images_per_s"] = n / (time.perf_counter() - t)
    out["shards_loader_source"] = config.input.loader
  if with_tfdata:
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      out["tfdata"] = "TensorFlow not installed"
      return out
    import tempfile  # pylint: disable=g-import-not-at-top
    quickstart = defaults.repo_file("configs/quickstart.py")
    if quickstart is None:
      out["tfdata"] = f"skipped: configs/quickstart.py {defaults.NOT_IN_PACKAGE}"
      return out
    from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    q = defaults.import_file(quickstart).get_config()
    q.input.cache = True
    data = input_pipeline.get_data(q.input)
    it = data.train_iterator(global_batch_size=16, seed=0)
    for _ in range(20):  # fill the cache and the shuffle buffers
      next(it)
    t = time.perf_counter()
    n = sum(len(next(it)["tokens"]) for _ in range(n_batches))
    out["tfdata_images_per_s"] = n / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
      input_pipeline.export_shards(q.input, d)
      it = shards.load(d).train_iterator(global_batch_size=16, seed=0)
      next(it)
      t = time.perf_counter()
      n = sum(len(next(it)["tokens"]) for _ in range(n_batches))
      out["shards_loader_embedded_images_per_s"] = n / (time.perf_counter() - t)
  return out


# ------------------------------------------------------------------- main
def run(config, *, steps: int = 5, skip_torch: bool = False, keys: str = "all",
        decode_reps: int = 5, skip_decode: bool = False, with_tfdata: bool = True,
        input_batches: int = 50, rounds: int = 7, skip_bf16: bool = False) -> dict:
  """Runs every measurement; returns the JSON-able result."""
  t_start = time.perf_counter()
  result: dict[str, Any] = {"machine": machine(), "config": {
      "model": config.model.name, "dtype": config.model.dtype,
      "batch_size": config.input.batch_size, "loader": config.input.get("loader", "tfds"),
      "cnn_features": list(config.model.cnn_features), "steps": steps,
      "conv_impl": config.model.get("conv_impl", "xla")}}
  result["peak"] = {"fp32": measure_peak(jnp.float32)}
  if jax.default_backend() != "cpu":
    result["peak"]["bf16"] = measure_peak(jnp.bfloat16)
  peak_key = "bf16" if config.model.dtype == "bfloat16" and "bf16" in result["peak"] else "fp32"
  peak = result["peak"][peak_key]["flops_per_s"]
  result["peak"]["used"] = peak_key

  by_key, counts, key_grid, vocab_size = _get_data(config)
  main_key = max(by_key, key=lambda k: (k[:2] == MAIN_SHAPE, k[0] * k[1], k[2]))
  if keys == "main":
    by_key = {main_key: by_key[main_key]}
  result["shapes"] = core.shapes_per_epoch(key_grid, counts, config.input.batch_size,
                                           config.seed, jax.process_count())
  train_r, model, state, step = bench_train(config, by_key, vocab_size, steps, peak, main_key)
  result["train"] = train_r
  result["cnn"] = bench_cnn(config, by_key[main_key], steps, peak)
  result["cnn"]["share_of_step"] = result["cnn"]["fwd_bwd"]["s"] / train_r["main_step_s"]

  # The interleaved rounds come before the decoding measurements: run after
  # them (latency.py's Predictor and its compiled programs in this process),
  # the JAX train step took 3.6 s instead of 2.5 s on a 2-core Xeon
  # (BENCHMARKS.md, "Rerun on an Intel Xeon with AMX").
  if not skip_torch:
    # A copy: the rounds' steps donate the state they are given, and the
    # decoding measurements below still read this one.
    result["torch"] = bench_versus_torch(config, by_key[main_key], vocab_size, rounds,
                                         step, jax.tree.map(jnp.array, state), model,
                                         result["machine"]["loadavg"][0], skip_bf16=skip_bf16)

  if not skip_decode:
    result["decoding"] = bench_decode(config, model, state, by_key[main_key], decode_reps)
    lat = _latency_module()
    if lat is not None and config.model.cnn_features == (64, 128, 256, 256, 512, 512):
      try:
        result["decoding"]["latency_py"] = lat.main(
            ["--runs", str(decode_reps), "--max-len", str(config.evals.max_decode_len)])
      except Exception as e:  # pylint: disable=broad-except
        result["decoding"]["latency_py"] = f"failed: {e!r}"
  result["input"] = bench_input(config, input_batches, with_tfdata)
  result["machine"]["loadavg_end"] = list(os.getloadavg())
  result["wall_s"] = time.perf_counter() - t_start
  return result


# A ratio is printed as the headline only if, during its run, other processes
# took at most this share of the cores (ForeignLoad) and the 1-minute load
# average before it was at most half the cores.
MAX_FOREIGN_SHARE = 0.25
MIN_ROUNDS = 5


WARMUP_ROUNDS = 3  # untimed interleaved rounds before bench_versus_torch's timed ones


def unreliable_because(rounds: int, load_before: float, foreign_share: float | None,
                       cores: int) -> list[str]:
  """Why a speed ratio measured so must not be a headline ([] if it may)."""
  problems = []
  if rounds < MIN_ROUNDS:
    problems.append(f"only {rounds} rounds (at least {MIN_ROUNDS} for a headline)")
  if load_before > cores / 2:
    problems.append(f"load average {load_before:.2f} before the run on {cores} cores")
  if foreign_share is not None and foreign_share > MAX_FOREIGN_SHARE:
    problems.append(f"other processes took {100 * foreign_share:.0f}% of the CPUs during it")
  return problems


def _spread(values: list[float]) -> dict[str, float]:
  return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_versus_torch(config, batch, vocab_size, rounds: int, step, state, model,
                       start_load: float, skip_bf16: bool = False) -> dict | str:
  """JAX vs its PyTorch twin (fp32, and bf16 autocast), timed interleaved.

  Each round runs one train step of every side in turn (JAX, JAX with the
  other convolutions when the config trains with a rewritten one, PyTorch
  fp32, PyTorch bf16),
  then one batched greedy decode of JAX and PyTorch fp32, so a change of load
  hits all sides alike; the ratios are per round (other time / JAX time: > 1
  means JAX is faster), reported as median and min-max.
  """
  path = defaults.repo_file("benchmarks/torch_reference.py")
  if path is None:
    return f"skipped: benchmarks/torch_reference.py {defaults.NOT_IN_PACKAGE}"
  try:
    ref = defaults.import_file(path)
  except ImportError as e:
    return f"skipped: {e}"
  from im2latex_jax.infer import inference  # pylint: disable=g-import-not-at-top
  m = config.model
  max_len = int(config.evals.max_decode_len)
  kwargs = dict(cnn_features=tuple(m.cnn_features), encoder_hidden=m.encoder_hidden,
                max_rows=m.max_rows, decoder_hidden=m.decoder_hidden, embed_dim=m.embed_dim)
  torch_fp32, torch_greedy, tmodel = ref.make_steps(batch["image"], batch["tokens"], vocab_size,
                                                    model_kwargs=kwargs, max_len=max_len)
  if not skip_bf16:
    torch_bf16, _, _ = ref.make_steps(batch["image"], batch["tokens"], vocab_size,
                                      model_kwargs=kwargs, bf16=True, max_len=max_len)
  dev = jax.device_put(batch)
  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = step(holder["state"], dev)
    jax.device_get(metrics)

  # The same step with the other convolutions (XLA's direct one, im2col),
  # when the config trains with a rewritten one: the rewrite's gain, interleaved.
  conv_impl = layers.resolve_conv_impl(m.get("conv_impl", "xla"), train=True)
  alt_steps = {}
  if conv_impl != "xla":
    from im2latex_jax import optim  # pylint: disable=g-import-not-at-top
    tx = optim.make_direction(config.optim)
    for impl in ("im2col", "xla"):
      if impl == conv_impl:
        continue
      alt_model = models.get_model(ml_collections.ConfigDict({**m.to_dict(), "conv_impl": impl}),
                                   vocab_size)
      alt_jit = jax.jit(steps_lib.make_train_step(alt_model, tx, optim.make_lr_schedule(config.optim),
                                                  jax.random.key(1)), donate_argnums=0)
      holder[impl] = jax.tree.map(jnp.array, state)

      def alt_step(impl=impl, alt_jit=alt_jit):
        holder[impl], metrics = alt_jit(holder[impl], dev)
        jax.device_get(metrics)
      alt_steps[impl] = alt_step

  decode = inference.make_decode_fn(model, beam_size=1, max_len=max_len)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  # The JAX state is donated by each step: decode with a copy of the params.
  variables = jax.tree.map(jnp.array, variables)

  def jax_greedy():
    jax.block_until_ready(decode(variables, dev["image"], dev["image_hw"]))

  jax_name = f"jax_{'bf16' if m.dtype == 'bfloat16' else 'fp32'}"
  train_sides = {jax_name: jax_step}
  for impl, fn in alt_steps.items():
    train_sides[f"{jax_name}_{impl}_conv"] = fn
  train_sides["torch_fp32"] = torch_fp32
  if not skip_bf16:
    train_sides["torch_bf16_autocast"] = torch_bf16
  greedy_sides = {jax_name: jax_greedy, "torch_fp32": torch_greedy}
  # Untimed rounds first (the first compiles): in a 2026-12-03 run with one
  # warm-up call, the JAX step fell from 5.1 to 2.8 s over the first five
  # timed rounds while the other sides held steady.
  for _ in range(WARMUP_ROUNDS):
    for fn in (*train_sides.values(), *greedy_sides.values()):
      fn()
  times = {"train": {k: [] for k in train_sides}, "greedy": {k: [] for k in greedy_sides}}
  with ForeignLoad() as load:
    for _ in range(rounds):
      for kind, sides in (("train", train_sides), ("greedy", greedy_sides)):
        for name, fn in sides.items():
          t = time.perf_counter()
          fn()
          times[kind][name].append(time.perf_counter() - t)
  # The load before the whole bench: by the time the rounds start, this
  # process's own JAX part has been running for minutes and counts in it.
  problems = unreliable_because(rounds, start_load, load.share, len(os.sched_getaffinity(0)))
  ratios = {}
  for kind in times:
    j = times[kind][jax_name]
    for name, ts in times[kind].items():
      if name != jax_name:
        ratios[f"{kind}_vs_{name}"] = _spread([t / jt for t, jt in zip(ts, j)])
  return {
      "torch_version": ref.torch.__version__, "threads": ref.torch.get_num_threads(),
      "params": int(sum(p.numel() for p in tmodel.parameters())), "rounds": rounds,
      "warmup_rounds": WARMUP_ROUNDS,
      "order": "per round: train " + ", ".join(train_sides) + "; greedy " + ", ".join(greedy_sides),
      "conv_impl": conv_impl,
      "bf16_autocast": "skipped (--skip_bf16)" if skip_bf16 else "timed",
      "median_s": {kind: {k: statistics.median(v) for k, v in d.items()}
                   for kind, d in times.items()},
      "times_s": times,
      # JAX speed relative to each PyTorch side (PyTorch time / JAX time).
      "jax_speed": ratios,
      "load_at_bench_start": start_load, "load_before": load.load_before,
      "load_after": load.load_after,
      "foreign_cpu_share": load.share, "reliable": not problems,
      "unreliable_because": problems,
  }


def _torch_summary(tr: dict, mach: dict) -> list[str]:
  med = tr["median_s"]
  lines = ["interleaved, %d rounds (median step): " % tr["rounds"] + ", ".join(
      f"{k} {v * 1000:.0f} ms" for k, v in med["train"].items()) + " | greedy batch: " +
      ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in med["greedy"].items())]
  share = tr["foreign_cpu_share"]
  lines.append(f"load {tr.get('load_at_bench_start', tr['load_before']):.2f} at the bench's "
               f"start, {tr['load_before']:.2f} / {tr['load_after']:.2f} before / after the "
               f"rounds (this run's own threads count); other processes' CPU share during them: "
               + ("n/a" if share is None else f"{100 * share:.0f}%"))
  speeds = ", ".join(f"{k.replace('_vs_', ' vs ')} {v['median']:.2f}x "
                     f"({v['min']:.2f}-{v['max']:.2f})" for k, v in tr["jax_speed"].items())
  if tr["reliable"]:
    lines.append(f"JAX speed (PyTorch time / JAX time, median and min-max of rounds) on "
                 f"{mach.get('cpu_model', '?')}: {speeds}")
  else:
    lines.append("UNRELIABLE, no headline ratio (" + "; ".join(tr["unreliable_because"]) +
                 f"); rerun on an idle machine. Raw: {speeds}")
  return lines


def _summary(r: dict) -> str:
  t = r["train"]
  mach = r["machine"]
  lines = [f"machine: {mach['backend']} {mach['device']} {mach.get('cpu_model', '')} "
           f"[{' '.join(mach.get('cpu_flags', []))}] ({mach['cpu_cores']} cores), "
           f"load {mach['loadavg'][0]:.2f}",
           f"peak ({r['peak']['used']}): {r['peak'][r['peak']['used']]['flops_per_s'] / 1e9:.1f} "
           "GFLOP/s"]
  for k, v in t["keys"].items():
    lines.append(f"train {k}: {v['step_s'] * 1000:.1f} ms/step, {v['samples_per_s']:.1f} "
                 f"samples/s, compile {v['compile_s']:.1f} s, "
                 f"{v['flops_per_step'] / 1e9:.1f} GFLOP/step, {100 * v['frac_of_peak']:.1f}% of peak")
  lines.append(f"retraces after warm-up: {t['retraces_after_warmup']}; distinct shapes "
               f"per epoch: {r['shapes']['distinct_shapes']}")
  c = r["cnn"]["fwd_bwd"]
  lines.append(f"CNN fwd+bwd: {c['s'] * 1000:.1f} ms, {c['flops'] / 1e9:.1f} GFLOP, "
               f"{100 * c['frac_of_peak']:.1f}% of peak ({100 * r['cnn']['share_of_step']:.0f}% "
               "of the step)")
  if isinstance(r.get("torch"), dict):
    lines.extend(_torch_summary(r["torch"], r["machine"]))
  if "decoding" in r:
    d = r["decoding"]
    lines.append(f"decode: greedy p50 {d['single_greedy']['p50_ms']:.1f} ms, beam5 p50 "
                 f"{d['single_beam5']['p50_ms']:.1f} ms, batched "
                 + ", ".join(f"{b}: {v:.1f} img/s" for b, v in
                             d["batched_greedy_images_per_s"].items()))
  lines.append("input: " + ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in r["input"].items()))
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  # --skip-torch as well as --skip_torch.
  argv = ["--" + a[2:].replace("-", "_") if a.startswith("--skip-") else a for a in argv]
  fv = flags.FlagValues()
  if not any(a == "--config" or a.startswith("--config=") for a in argv):
    default = defaults.repo_file(DEFAULT_CONFIG)
    if default is None:
      sys.stderr.write(f"error: the default config {DEFAULT_CONFIG} {defaults.NOT_IN_PACKAGE}; "
                       "or pass --config FILE (a config with input.loader='fake' "
                       "needs no data).\n")
      return 2
    argv = [argv[0], "--config", default, *argv[1:]]
  config_flags.DEFINE_config_file("config", None, "Config file[:arg] (default: "
                                  f"{DEFAULT_CONFIG} of the checkout).",
                                  flag_values=fv, lock_config=True, sys_argv=argv)
  flags.DEFINE_string("out", None, "Write the JSON here too.", flag_values=fv)
  flags.DEFINE_integer("steps", 5, "Timed steps per key (median).", flag_values=fv)
  flags.DEFINE_bool("skip_torch", False, "Skip the PyTorch reference.", flag_values=fv)
  flags.DEFINE_bool("skip_bf16", False, "Skip PyTorch's bf16 autocast side (minutes a step "
                    "on CPUs without bf16 units).", flag_values=fv)
  flags.DEFINE_bool("skip_decode", False, "Skip the decoding latencies.", flag_values=fv)
  flags.DEFINE_bool("skip_tfdata", False, "Skip the tf.data throughput.", flag_values=fv)
  flags.DEFINE_enum("keys", "all", ["all", "main"], "Time every key or the main one.",
                    flag_values=fv)
  flags.DEFINE_integer("decode_reps", 5, "Timed decoding calls.", flag_values=fv)
  flags.DEFINE_integer("rounds", 7, "Interleaved JAX/PyTorch rounds (at least 5 for "
                       "a headline ratio).", flag_values=fv)
  fv(argv)
  if fv.rounds < 1:
    sys.stderr.write(f"error: --rounds {fv.rounds} must be at least 1\n")
    return 2
  r = run(fv.config, steps=fv.steps, skip_torch=fv.skip_torch, keys=fv.keys,
          decode_reps=fv.decode_reps, skip_decode=fv.skip_decode,
          with_tfdata=not fv.skip_tfdata, rounds=fv.rounds, skip_bf16=fv.skip_bf16)
  print(_summary(r))
  text = json.dumps(r, indent=1, default=float)
  if fv.out:
    with open(fv.out, "w") as f:
      f.write(text)
  else:
    print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
