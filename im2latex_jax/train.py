"""Training and evaluation loop: `train_and_evaluate(config, workdir)`.

Reads top to bottom: mesh → input pipeline → model and optimizer → sharded
train state → update step → restore checkpoint → evaluators → train loop.
Rerunning the same command on the same workdir resumes from the last
checkpoint with the same parameters, optimizer and plateau state.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from im2latex_jax import checkpointing
from im2latex_jax import defaults
from im2latex_jax import inference
from im2latex_jax import models
from im2latex_jax import optim
from im2latex_jax import sharding
from im2latex_jax import writers
from im2latex_jax.data import vocab as vocab_lib

Batch = dict[str, Any]
PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; arrays only."""
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  plateau: PyTree


def token_losses(logits: jax.Array, batch: Batch):
  """Per-token cross-entropy, weights and correctness for teacher forcing."""
  targets = batch["tokens"][:, 1:]
  weights = (targets != vocab_lib.PAD) * batch["weight"][:, None]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets)
  return ce, weights, correct


def _variables(state_or_params, batch_stats):
  return {"params": state_or_params, "batch_stats": batch_stats}


def make_init_fn(model, tx, plateau, cfg: ml_collections.ConfigDict, sample_hw):
  """init(rng) -> TrainState; jit it with out_shardings to place it."""
  h, w = sample_hw

  def init(rng):
    init_rng, scheme_rng = jax.random.split(rng)
    variables = models.init_variables(model, init_rng, (h, w))
    params = models.apply_init_scheme(variables["params"], cfg.model, scheme_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), plateau=plateau.init(params))
  return init


def make_train_step(model, tx, lr_fn: Callable, base_rng: jax.Array):
  """(state, batch) -> (state, metric sums). The caller jits it."""

  def train_step(state: TrainState, batch: Batch):
    rng = jax.random.fold_in(base_rng, state.step)

    def loss_fn(params):
      logits, new_vars = model.apply(
          _variables(params, state.batch_stats), batch["image"], batch["image_hw"],
          batch["tokens"][:, :-1], train=True, mutable=["batch_stats"],
          rngs={"dropout": rng})
      ce, weights, correct = token_losses(logits, batch)
      loss_sum = jnp.sum(ce * weights)
      ntok = jnp.sum(weights)
      return loss_sum / jnp.maximum(ntok, 1.0), (new_vars, loss_sum, ntok,
                                                  jnp.sum(correct * weights))

    grads, (new_vars, loss_sum, ntok, ncorrect) = jax.grad(loss_fn, has_aux=True)(state.params)
    directions, opt_state = tx.update(grads, state.opt_state, state.params)
    lr = lr_fn(state.step) * state.plateau.scale
    params = jax.tree.map(lambda p, d: p - lr * d, state.params, directions)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm)
    new = state.replace(step=state.step + 1, params=params,
                        batch_stats=new_vars.get("batch_stats", state.batch_stats),
                        opt_state=opt_state)
    # A non-finite step leaves the state untouched; the host stops at the next
    # log step and names the first bad step (the last checkpoint stays good).
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    new = new.replace(step=state.step + 1)
    metrics = {
        "loss_sum": loss_sum, "tokens": ntok, "correct": ncorrect,
        "examples": jnp.sum(batch["weight"]), "steps": jnp.ones(()),
        "grad_norm_sum": grad_norm, "lr": lr,
        "first_nonfinite": jnp.where(ok, jnp.iinfo(jnp.int32).max, state.step),
    }
    return new, metrics

  return train_step


def merge_train_metrics(acc, m):
  """Sums, except lr (last) and first_nonfinite (min)."""
  if acc is None:
    return m
  out = {k: acc[k] + m[k] for k in m if k not in ("lr", "first_nonfinite")}
  out["lr"] = m["lr"]
  out["first_nonfinite"] = jnp.minimum(acc["first_nonfinite"], m["first_nonfinite"])
  return out


def make_eval_step(model):
  def eval_step(state: TrainState, batch: Batch):
    logits = model.apply(_variables(state.params, state.batch_stats), batch["image"],
                         batch["image_hw"], batch["tokens"][:, :-1], train=False)
    ce, weights, correct = token_losses(logits, batch)
    return {"loss_sum": jnp.sum(ce * weights), "tokens": jnp.sum(weights),
            "correct": jnp.sum(correct * weights), "examples": jnp.sum(batch["weight"])}
  return eval_step


def evaluate_loss(eval_step, state, batches, mesh) -> dict[str, float]:
  """Teacher-forced loss, perplexity and token accuracy over a finite split."""
  acc = None
  for batch in batches:
    m = eval_step(state, sharding.shard_batch(batch, mesh))
    acc = m if acc is None else jax.tree.map(jnp.add, acc, m)
  acc = jax.device_get(acc)
  ntok = max(float(acc["tokens"]), 1.0)
  loss = float(acc["loss_sum"]) / ntok
  return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
          "token_accuracy": float(acc["correct"]) / ntok,
          "examples": float(acc["examples"])}


def precompile(train_step, eval_step, state, mesh, key_shapes, config) -> None:
  """Compiles the train and eval steps for every bucket shape, in parallel.

  XLA compiles in C++ without the GIL, so on a many-core host the 10-40
  shapes of a bucket grid compile in the time of a few; the executables land
  in the persistent compilation cache, where the steps' first calls find them.
  """
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  data = sharding.data_sharded(mesh)

  def batch(bs, h, w, t):
    return {"image": jax.ShapeDtypeStruct((bs, h, w, 1), jnp.uint8, sharding=data),
            "image_hw": jax.ShapeDtypeStruct((bs, 2), jnp.int32, sharding=data),
            "tokens": jax.ShapeDtypeStruct((bs, t), jnp.int32, sharding=data),
            "weight": jax.ShapeDtypeStruct((bs,), jnp.float32, sharding=data)}
  jobs = [(train_step, batch(config.input.batch_size, *shape)) for shape in key_shapes]
  jobs += [(eval_step, batch(config.input.eval_batch_size, *shape)) for shape in key_shapes]
  t0 = time.time()
  with concurrent.futures.ThreadPoolExecutor(config.precompile_workers) as pool:
    list(pool.map(lambda job: job[0].lower(state, job[1]).compile(), jobs))
  logging.info("Precompiled %d step shapes with %d threads in %.1fs.", len(jobs),
               config.precompile_workers, time.time() - t0)


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def save_run_files(workdir: str, config: ml_collections.ConfigDict, vocab) -> None:
  """config.json and vocab.txt beside the checkpoints (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  vocab_path = os.path.join(workdir, vocab_lib.VOCAB_FILENAME)
  if not os.path.exists(vocab_path):
    vocab.save(vocab_path)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def load_workdir_vocab(workdir: str):
  path = os.path.join(workdir, vocab_lib.VOCAB_FILENAME)
  return vocab_lib.Vocab.load(path) if os.path.exists(path) else None


def init_vocab(config: ml_collections.ConfigDict, workdir: str):
  """The vocabulary a run must use: the workdir's, or config.init_from's.

  Raises ValueError (one line) when both exist and differ: a workdir started
  from another model cannot be continued from this one.
  """
  saved = load_workdir_vocab(workdir)
  if not config.get("init_from"):
    return saved
  path = os.path.abspath(os.path.expanduser(config.init_from))
  vocab_path = os.path.join(path, vocab_lib.VOCAB_FILENAME)
  if not os.path.exists(vocab_path):
    raise FileNotFoundError(f"config.init_from={config.init_from}: {vocab_path} does not exist; "
                            "give an exported model dir or a training workdir.")
  source = vocab_lib.Vocab.load(vocab_path)
  if saved is not None and saved != source:
    raise ValueError(f"config.init_from={config.init_from} has a vocabulary of {len(source)} "
                     f"tokens that differs from {workdir}/vocab.txt ({len(saved)}): use a new "
                     "--workdir for a run started from this model.")
  return source


def load_init_from(state: TrainState, path: str, tx, plateau) -> TrainState:
  """`state` with the params and batch stats of the model at `path` and a
  fresh optimizer and plateau state for them; the step stays 0.

  Raises ValueError naming the parameters that do not fit (missing, extra or
  of another shape) when `path` holds another network than config.model.
  """
  # Either kind of dir (a workdir: its best checkpoint), without an optimizer.
  source = inference.load_model(path)
  stored, step = source.variables, source.step
  new = {}
  for group in ("params", "batch_stats"):
    want = flax.traverse_util.flatten_dict(getattr(state, group), sep="/")
    have = flax.traverse_util.flatten_dict(stored.get(group, {}), sep="/")
    problems = [f"{group}/{k} missing" for k in sorted(set(want) - set(have))]
    problems += [f"{group}/{k} not in this model" for k in sorted(set(have) - set(want))]
    problems += [f"{group}/{k} is {tuple(np.shape(have[k]))}, this model's {tuple(want[k].shape)}"
                 for k in sorted(set(want) & set(have)) if np.shape(have[k]) != want[k].shape]
    if problems:
      more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
      raise ValueError(f"config.init_from={path} does not fit config.model: "
                       f"{'; '.join(problems[:3])}{more}. Set config.model as in "
                       f"{os.path.join(path, 'config.json')}.")
    new[group] = flax.traverse_util.unflatten_dict(
        {k: jnp.asarray(np.asarray(have[k]), want[k].dtype) for k in want}, sep="/")
  logging.info("Initialized from %s (its step %d); fresh optimizer.", path, step)
  return state.replace(params=new["params"], batch_stats=new["batch_stats"],
                       opt_state=tx.init(new["params"]), plateau=plateau.init(new["params"]))


def build_model_and_optimizer(config: ml_collections.ConfigDict, vocab_size: int):
  model = models.get_model(config.model, vocab_size)
  tx = optim.make_direction(config.optim)
  plateau = optim.make_plateau(config.optim)
  return model, tx, plateau


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       train_iter: Iterator[Batch] | None = None,
                       eval_batches_fn: Callable[[], Any] | None = None,
                       vocab: vocab_lib.Vocab | None = None,
                       steps_per_epoch: int | None = None) -> dict[str, Any]:
  """Trains, evaluates and checkpoints in `workdir`; returns the final metrics.

  Args:
    config: a config from configs/ (see im2latex_jax/defaults.py).
    workdir: checkpoints, logs, config and vocabulary go here.
    train_iter: optional iterator of numpy batches (the TF-free path); the
      default reads TFDS through tf.data (data/input_pipeline.py).
    eval_batches_fn: optional callable returning an iterable of eval batches.
    vocab: required together with train_iter.
    steps_per_epoch: with train_iter, for epoch-based lengths.
  """
  workdir = os.path.abspath(workdir)
  defaults.check_config(config)  # before anything is written
  # ------------------------------------------------------------------ mesh
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.input.batch_size, mesh)
  sharding.check_batch_size(config.input.eval_batch_size, mesh, "config.input.eval_batch_size")
  logging.info("Mesh: %d devices (%d processes), backend %s.", mesh.devices.size,
               jax.process_count(), jax.default_backend())

  # -------------------------------------------------------- input pipeline
  saved_vocab = init_vocab(config, workdir)
  data = None
  key_shapes = []  # (H, W, T) of every bucket key, for precompilation
  make_train_iter = None
  if train_iter is None and config.input.get("loader", "tfds") != "tfds":
    # The TF-free path (numpy shards or fake data): no TensorFlow import.
    from im2latex_jax.data import shards  # pylint: disable=g-import-not-at-top
    shard_data = shards.get_data(config.input)
    if saved_vocab is not None and saved_vocab != shard_data.vocab:
      raise ValueError(f"The vocabulary of the shards differs from {workdir}/vocab.txt.")
    vocab = shard_data.vocab
    steps_per_epoch = max(shard_data.num_train // config.input.batch_size, 1)
    key_shapes = [shard_data.keys.key_shape(k) for k in range(shard_data.keys.num_keys())]

    def make_train_iter(start_step):
      return shards.train_iterator(
          shard_data, global_batch_size=config.input.batch_size, seed=config.seed,
          start_step=start_step, process_index=jax.process_index(),
          process_count=jax.process_count())

    if eval_batches_fn is None and config.input.eval_split in shard_data.splits:
      def eval_batches_fn():
        return shards.eval_batches(
            shard_data, config.input.eval_split,
            global_batch_size=config.input.eval_batch_size,
            max_examples=config.eval_max_examples, process_index=jax.process_index(),
            process_count=jax.process_count())
  elif train_iter is None:
    from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    data = input_pipeline.get_data(config.input, vocab=saved_vocab)
    vocab = data.vocab
    steps_per_epoch = max(data.num_train // config.input.batch_size, 1)
    key_shapes = [data.keys.key_shape(k) for k in range(data.keys.num_keys())]
    logging.info("Train keys (HxW/T: count): %s",
                 input_pipeline.describe_counts(data.keys, data.train_counts))
  else:
    if vocab is None:
      raise ValueError("train_and_evaluate(train_iter=...) needs vocab=.")
    if saved_vocab is not None and saved_vocab != vocab:
      raise ValueError(f"The vocabulary passed differs from {workdir}/vocab.txt.")
  save_run_files(workdir, config, vocab)

  if config.num_train_steps > 0:
    num_steps = int(config.num_train_steps)
  else:
    num_steps = int(config.num_epochs * (steps_per_epoch or 1))

  # --------------------------------------------------- model and optimizer
  model, tx, plateau = build_model_and_optimizer(config, len(vocab))
  lr_fn = optim.make_lr_schedule(config.optim)

  # ----------------------------------------------------- sharded train state
  repl = sharding.replicated(mesh)
  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  sample_hw = data.keys.image_buckets[0] if data is not None else models.INIT_HW
  init_fn = make_init_fn(model, tx, plateau, config, sample_hw)
  abstract = jax.eval_shape(init_fn, init_rng)
  state = jax.jit(init_fn, out_shardings=repl)(init_rng)
  logging.info("Model %s: %s parameters, vocabulary %d.", config.model.name,
               f"{param_count(state.params):,}", len(vocab))

  # ------------------------------------------------------------ update step
  train_step = jax.jit(make_train_step(model, tx, lr_fn, step_rng),
                       in_shardings=(repl, sharding.data_sharded(mesh)),
                       out_shardings=(repl, repl), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model), in_shardings=(repl, sharding.data_sharded(mesh)),
                      out_shardings=repl)
  merge = jax.jit(merge_train_metrics, out_shardings=repl)
  metric_name = config.optim.plateau.metric
  update_plateau = jax.jit(
      lambda st, v: st.replace(plateau=optim.update_plateau(plateau, st.plateau, "loss", v)),
      out_shardings=repl, donate_argnums=0)

  if config.get("precompile_workers", 0) and key_shapes:
    precompile(train_step, eval_step, state, mesh, key_shapes, config)

  # ------------------------------------------------------ restore checkpoint
  mngr = checkpointing.make_manager(workdir, metric_name, config.ckpt.keep_best)
  start_step = 0
  if mngr.latest_step() is not None:
    shardings = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
                             abstract)
    state, meta = checkpointing.restore(mngr, mngr.latest_step(), shardings)
    start_step = int(state.step)
    logging.info("Resumed from %s at step %d (lr scale %.4g).", mngr.directory, start_step,
                 float(state.plateau.scale))
  elif config.get("init_from"):
    state = jax.device_put(load_init_from(state, config.init_from, tx, plateau), repl)
  writer = writers.MetricWriter(workdir, config, config.wandb)
  if start_step >= num_steps:
    logging.info("Already trained for %d >= %d steps; nothing to do.", start_step, num_steps)

  if make_train_iter is not None:
    train_iter = make_train_iter(start_step)
  elif train_iter is None:
    from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    train_iter = input_pipeline.create_train_iterator(
        data, config.input, global_batch_size=config.input.batch_size,
        seed=config.seed, start_step=start_step)

  # -------------------------------------------------------------- evaluators
  if eval_batches_fn is None and data is not None:
    from im2latex_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
    # Built once: creating it counts every host's examples per key, which
    # need not be repeated at each evaluation (a tf.data.Dataset re-iterates).
    eval_ds, _, _ = input_pipeline.create_eval_dataset(
        data, config.input, config.input.eval_split,
        global_batch_size=config.input.eval_batch_size,
        max_examples=config.eval_max_examples)

    def eval_batches_fn():
      return eval_ds.as_numpy_iterator()

  decode_eval = None
  if config.evals.decode_every_steps and data is not None:
    from im2latex_jax import evaluators  # pylint: disable=g-import-not-at-top
    decode_eval = evaluators.DecodeEvaluator(model, vocab, data, config, mesh)

  def run_evals(state, step) -> dict[str, float]:
    metrics = {}
    if eval_batches_fn is not None:
      t = time.time()
      metrics = evaluate_loss(eval_step, state, eval_batches_fn(), mesh)
      logging.info("[%d] eval loss %.4f ppl %.2f tok-acc %.3f (%d ex, %.1fs)", step,
                   metrics["loss"], metrics["perplexity"], metrics["token_accuracy"],
                   metrics["examples"], time.time() - t)
    if decode_eval is not None and (step % config.evals.decode_every_steps == 0
                                    or step == num_steps):
      metrics.update(decode_eval.run(state))
    return metrics

  # SIGTERM (a preemption, `timeout`, a scheduler) ends the run cleanly at the
  # next step with a checkpoint of that step; rerunning resumes from it.
  stop = {"signal": None}
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, lambda signum, _: stop.update(signal=signum))
  else:
    previous = None

  # -------------------------------------------------------------- train loop
  logging.info("Training %s for steps %d..%d.", config.model.name, start_step, num_steps)
  acc, shapes = None, set()
  t0, last_log_t, last_log_step = time.time(), time.time(), start_step
  final: dict[str, Any] = {}
  step = start_step
  try:
    while step < num_steps:
      batch = next(train_iter)
      shapes.add((batch["image"].shape[1:3], batch["tokens"].shape[1]))
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, m = train_step(state, sharding.shard_batch(batch, mesh))
      acc = merge(acc, m)
      step += 1
      if step % config.log_every_steps == 0 or step == num_steps:
        host = jax.device_get(acc)
        acc = None
        if host["first_nonfinite"] < np.iinfo(np.int32).max:
          raise FloatingPointError(
              f"Non-finite loss or gradient at step {int(host['first_nonfinite'])}; "
              f"training stopped. The last good checkpoint in {mngr.directory} is "
              "untouched (that step's update was not applied). Lower config.optim.lr "
              "or enable clipping.")
        now = time.time()
        sps = (step - last_log_step) / max(now - last_log_t, 1e-9)
        train_m = {"loss": host["loss_sum"] / max(host["tokens"], 1),
                   "token_accuracy": host["correct"] / max(host["tokens"], 1),
                   "grad_norm": host["grad_norm_sum"] / host["steps"], "lr": host["lr"],
                   "steps_per_sec": sps, "examples_per_sec": sps * config.input.batch_size,
                   "distinct_shapes": len(shapes),
                   "param_norm": float(optax.global_norm(state.params))}
        writer.write(step, train_m, prefix="train/")
        eta = (num_steps - step) / max(sps, 1e-9)
        logging.info("[%d/%d] loss %.4f tok-acc %.3f lr %.3g | %.2f steps/s, %.1f ex/s, "
                     "%d shapes, ETA %s", step, num_steps, train_m["loss"],
                     train_m["token_accuracy"], train_m["lr"], sps,
                     train_m["examples_per_sec"], len(shapes), _fmt_time(eta))
        last_log_t, last_log_step = now, step
        final.update({f"train_{k}": v for k, v in train_m.items()})
      if step % config.eval_every_steps == 0 or step == num_steps:
        metrics = run_evals(state, step)
        if metrics:
          writer.write(step, metrics, prefix="eval/")
          if metric_name in metrics:
            state = update_plateau(state, optim.plateau_value(metric_name, metrics[metric_name]))
          final.update(metrics)
        metrics["lr_scale"] = float(state.plateau.scale)
        checkpointing.save(mngr, step, state, {k: float(v) for k, v in metrics.items()})
      elif stop["signal"] is not None:
        logging.warning("SIGTERM: saving a checkpoint at step %d and stopping.", step)
        checkpointing.save(mngr, step, state, None)
        break
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
    mngr.wait_until_finished()
    writer.close()
  final = {k: float(np.asarray(v)) for k, v in final.items()}
  final.update(step=step, wall_time_s=time.time() - t0, distinct_shapes=len(shapes),
               lr_scale=float(state.plateau.scale))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump({k: float(np.asarray(v)) for k, v in final.items()}, f, indent=2)
  return final


def _fmt_time(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
