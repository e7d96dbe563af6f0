"""The compiled computations of training: the update step and teacher-forced
evaluation, as plain functions the caller jits (train.py with mesh
shardings, bench.py and evaluate.py as they need).
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from typing import Any, Callable, Iterable

from absl import logging
import jax
import jax.numpy as jnp
import optax

from im2latex_jax import sharding
from im2latex_jax.data import core
from im2latex_jax.data import vocab as vocab_lib

PyTree = Any


def token_losses(logits: jax.Array, batch: core.Batch):
  """Per-token cross-entropy, weights and correctness for teacher forcing."""
  targets = batch["tokens"][:, 1:]
  weights = (targets != vocab_lib.PAD) * batch["weight"][:, None]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, -1) == targets)
  return ce, weights, correct


def make_train_step(model, tx, lr_fn: Callable, base_rng: jax.Array):
  """(state, batch) -> (state, metric sums) for a state.TrainState."""

  def train_step(state, batch: core.Batch):
    rng = jax.random.fold_in(base_rng, state.step)

    def loss_fn(params):
      logits, new_vars = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, batch["image"],
          batch["image_hw"], batch["tokens"][:, :-1], train=True, mutable=["batch_stats"],
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
    grad_norm = optax.tree.norm(grads)
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
  """(variables, batch) -> sums of the teacher-forced loss, tokens, correct."""
  def eval_step(variables: PyTree, batch: core.Batch):
    logits = model.apply(variables, batch["image"], batch["image_hw"],
                         batch["tokens"][:, :-1], train=False)
    ce, weights, correct = token_losses(logits, batch)
    return {"loss_sum": jnp.sum(ce * weights), "tokens": jnp.sum(weights),
            "correct": jnp.sum(correct * weights), "examples": jnp.sum(batch["weight"])}
  return eval_step


def evaluate_loss(eval_step, variables: PyTree, batches: Iterable[core.Batch],
                  mesh) -> dict[str, float]:
  """Teacher-forced loss, perplexity and token accuracy over a finite split."""
  acc = None
  for batch in batches:
    batch = {k: batch[k] for k in ("image", "image_hw", "tokens", "weight")}
    m = eval_step(variables, sharding.shard_batch(batch, mesh))
    acc = m if acc is None else jax.tree.map(jnp.add, acc, m)
  if acc is None:
    raise ValueError("The evaluation split gave no batch.")
  acc = jax.device_get(acc)
  ntok = max(float(acc["tokens"]), 1.0)
  loss = float(acc["loss_sum"]) / ntok
  return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
          "token_accuracy": float(acc["correct"]) / ntok,
          "examples": float(acc["examples"])}


def precompile(train_step, eval_step, state, mesh, key_shapes, *, batch_size: int,
               eval_batch_size: int, workers: int) -> None:
  """Compiles the train and eval steps for every bucket shape, in parallel.

  XLA compiles in C++ without the GIL, so on a many-core host the 10-40
  shapes of a bucket grid compile in the time of a few; the executables land
  in the persistent compilation cache, where the steps' first calls find them.
  """
  data = sharding.data_sharded(mesh)

  def batch(bs, h, w, t):
    return {"image": jax.ShapeDtypeStruct((bs, h, w, 1), jnp.uint8, sharding=data),
            "image_hw": jax.ShapeDtypeStruct((bs, 2), jnp.int32, sharding=data),
            "tokens": jax.ShapeDtypeStruct((bs, t), jnp.int32, sharding=data),
            "weight": jax.ShapeDtypeStruct((bs,), jnp.float32, sharding=data)}
  jobs = [(train_step, state, batch(batch_size, *shape)) for shape in key_shapes]
  jobs += [(eval_step, state.variables, batch(eval_batch_size, *shape)) for shape in key_shapes]
  t0 = time.time()
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    list(pool.map(lambda job: job[0].lower(job[1], job[2]).compile(), jobs))
  logging.info("Precompiled %d step shapes with %d threads in %.1fs.", len(jobs), workers,
               time.time() - t0)
