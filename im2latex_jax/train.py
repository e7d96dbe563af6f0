"""`train_and_evaluate(config, workdir)`: the training story, top to bottom.

mesh -> data source -> model and optimizer -> sharded train state -> compiled
steps -> restore (or init_from) -> evaluators -> train loop. Rerunning the
same command on the same workdir resumes from the last checkpoint with the
same parameters, optimizer and plateau state, and the same batches.

Only the command entry point (train_cli.py) imports this module; everything
it uses lives below it: state.py (train state, model and optimizer),
steps.py (the compiled functions), data/ (one DataSource, whatever the
loader), evaluators.py (decoding metrics), checkpointing.py, workdir.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import optax

from im2latex_jax import checkpointing
from im2latex_jax import defaults
from im2latex_jax.evaluation import evaluators
from im2latex_jax.infer import inference
from im2latex_jax import optim
from im2latex_jax import sharding
from im2latex_jax import state as state_lib
from im2latex_jax import steps as steps_lib
from im2latex_jax import workdir as workdir_lib
from im2latex_jax import writers
from im2latex_jax.data import core
from im2latex_jax.data import sources

# One program (cached on disk like the steps); eager it is ~40 op-by-op
# compilations, ~6 s at the first log on 2 CPU cores.
_param_norm = jax.jit(optax.tree.norm)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: core.DataSource | None = None) -> dict[str, Any]:
  """Trains, evaluates and checkpoints in `workdir`; returns the final metrics.

  Args:
    config: a config from configs/ (see im2latex_jax/defaults.py).
    workdir: checkpoints, logs, config and vocabulary go here (workdir.py).
    data: the data source; default `sources.get_data(config.input)` (the
      loader config.input.loader names). Tests pass a core.BatchSource.
  """
  workdir = os.path.abspath(workdir)
  defaults.check_config(config)  # before anything is written
  # ------------------------------------------------------------------ mesh
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.input.batch_size, mesh)
  sharding.check_batch_size(config.input.eval_batch_size, mesh, "config.input.eval_batch_size")
  logging.info("Mesh: %d devices (%d processes), backend %s.", mesh.devices.size,
               jax.process_count(), jax.default_backend())

  # ------------------------------------------------------------ data source
  saved_vocab = state_lib.init_vocab(config, workdir)
  if data is None:
    data = sources.get_data(config.input, vocab=saved_vocab)
  elif saved_vocab is not None and saved_vocab != data.vocab:
    raise ValueError(f"The data's vocabulary differs from {workdir}/vocab.txt.")
  vocab = data.vocab
  workdir_lib.save_run_files(workdir, config, vocab)
  if data.keys is not None and getattr(data, "train_counts", None) is not None:
    logging.info("Train keys (HxW/T: count): %s",
                 core.describe_counts(data.keys, data.train_counts))
  eval_split = config.input.eval_split
  has_eval = bool(eval_split)
  if has_eval and not data.has_split(eval_split):
    raise ValueError(f"config.input.eval_split={eval_split!r} is not a split of the data "
                     f"({config.input.get('loader', 'tfds')} source, which has "
                     f"{list(data.split_names)}); name one of those, or set "
                     "config.input.eval_split='' to train without evaluation.")
  if config.num_train_steps > 0:
    num_steps = int(config.num_train_steps)
  else:
    num_steps = int(config.num_epochs * max(data.num_train // config.input.batch_size, 1))

  # --------------------------------------------------- model and optimizer
  model, tx, plateau = state_lib.build_model_and_optimizer(config, len(vocab))
  lr_fn = optim.make_lr_schedule(config.optim, num_steps)

  # ----------------------------------------------------- sharded train state
  repl = sharding.replicated(mesh)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  init_fn = state_lib.make_init_fn(model, tx, plateau, config)
  abstract = jax.eval_shape(init_fn, init_rng)
  state = jax.jit(init_fn, out_shardings=repl)(init_rng)
  logging.info("Model %s: %s parameters, vocabulary %d.", config.model.name,
               f"{state_lib.param_count(state.params):,}", len(vocab))

  # ---------------------------------------------------------- compiled steps
  data_sharded = sharding.data_sharded(mesh)
  train_step = jax.jit(steps_lib.make_train_step(model, tx, lr_fn, step_rng),
                       in_shardings=(repl, data_sharded), out_shardings=(repl, repl),
                       donate_argnums=0)
  eval_step = jax.jit(steps_lib.make_eval_step(model), in_shardings=(repl, data_sharded),
                      out_shardings=repl)
  merge = jax.jit(steps_lib.merge_train_metrics, out_shardings=repl)
  metric_name = config.optim.plateau.metric
  update_plateau = jax.jit(
      lambda st, v: st.replace(plateau=optim.update_plateau(plateau, st.plateau, "loss", v)),
      out_shardings=repl, donate_argnums=0)
  if config.get("precompile_workers", 0) and data.keys is not None:
    steps_lib.precompile(train_step, eval_step, state, mesh, data.keys.shapes(),
                         batch_size=config.input.batch_size,
                         eval_batch_size=config.input.eval_batch_size,
                         workers=config.precompile_workers)

  # ------------------------------------------------ restore, or init_from
  mngr = checkpointing.make_manager(workdir, metric_name, config.ckpt.keep_best,
                                    higher_is_better=metric_name in optim.MAXIMIZE)
  start_step = 0
  if mngr.latest_step() is not None:
    shardings = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
                             abstract)
    state, _ = checkpointing.restore(mngr, mngr.latest_step(), shardings)
    start_step = int(state.step)
    logging.info("Resumed from %s at step %d (lr scale %.4g).", mngr.directory, start_step,
                 float(state.plateau.scale))
  elif config.get("init_from"):
    state = jax.device_put(state_lib.load_init_from(state, config.init_from, tx, plateau), repl)
  writer = writers.MetricWriter(workdir, config, config.wandb)
  if start_step >= num_steps:
    logging.info("Already trained for %d >= %d steps; nothing to do.", start_step, num_steps)
  train_iter = data.train_iterator(global_batch_size=config.input.batch_size,
                                   seed=config.seed, start_step=start_step)

  # -------------------------------------------------------------- evaluators
  def eval_batches(with_strings=False, max_examples=config.eval_max_examples):
    return data.eval_batches(eval_split, global_batch_size=config.input.eval_batch_size,
                             with_strings=with_strings, max_examples=max_examples)

  decode_eval = None
  if config.evals.decode_every_steps and has_eval:
    n_decode = config.evals.decode_max_examples
    decode_eval = evaluators.DecodeEvaluator(
        inference.make_decode_fn(model, beam_size=1, max_len=config.evals.max_decode_len),
        vocab, lambda: eval_batches(with_strings=True, max_examples=n_decode), mesh,
        max_examples=n_decode)

  def run_evals(state, step) -> dict[str, float]:
    metrics = {}
    if has_eval:
      t = time.time()
      metrics = steps_lib.evaluate_loss(eval_step, state.variables, eval_batches(), mesh)
      logging.info("[%d] eval loss %.4f ppl %.2f tok-acc %.3f (%d ex, %.1fs)", step,
                   metrics["loss"], metrics["perplexity"], metrics["token_accuracy"],
                   metrics["examples"], time.time() - t)
    if decode_eval is not None and (step % config.evals.decode_every_steps == 0
                                    or step == num_steps):
      metrics.update(decode_eval.run(state.variables))
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
                   "param_norm": float(_param_norm(state.params))}
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
  workdir_lib.write_final_metrics(workdir, final)
  return final


def _fmt_time(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
