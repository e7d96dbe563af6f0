"""Optimizers from config, gradient clipping, and reduce-on-plateau.

The learning rate is applied outside the optax chain: the chain turns
gradients into directions (clip → momentum/Adam → weight decay), and the train
step multiplies them by `-lr(step) * plateau_scale`. Since optax's SGD and
Adam also scale last, this is exactly `optax.sgd(lr)` / `optax.adam(lr)` with
a learning rate that the plateau state can lower between evaluations.

The plateau state is `optax.contrib.reduce_on_plateau`'s, kept in the train
state (so it is checkpointed) and updated once per evaluation with the
validation metric (negated for metrics to maximise: it always minimises).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

# Metrics where larger is better; the plateau sees their negation.
MAXIMIZE = ("bleu4", "edit_accuracy", "exact_match", "token_accuracy")


def clip_by_per_tensor_norm(max_norm: float) -> optax.GradientTransformation:
  """im2markup clips every parameter tensor's gradient norm separately."""
  def update_fn(updates, state, params=None):
    del params
    def clip(g):
      norm = jnp.sqrt(jnp.sum(jnp.square(g)))
      return g * jnp.minimum(1.0, max_norm / (norm + 1e-12))
    return jax.tree.map(clip, updates), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def make_direction(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Gradient -> update direction, before the learning rate."""
  chain = []
  if cfg.clip == "global":
    chain.append(optax.clip_by_global_norm(cfg.clip_norm))
  elif cfg.clip == "per_tensor":
    chain.append(clip_by_per_tensor_norm(cfg.clip_norm))
  elif cfg.clip != "none":
    raise ValueError(f"config.optim.clip {cfg.clip!r}: use 'global', 'per_tensor' or 'none'.")
  if cfg.name == "sgd":
    pass
  elif cfg.name in ("momentum", "nesterov"):
    chain.append(optax.trace(decay=cfg.momentum, nesterov=cfg.name == "nesterov"))
  elif cfg.name == "adam":
    chain.append(optax.scale_by_adam())
  elif cfg.name == "adamw":
    chain.extend([optax.scale_by_adam(), optax.add_decayed_weights(cfg.weight_decay)])
  else:
    raise ValueError(f"Unknown config.optim.name {cfg.name!r}; use sgd, momentum, "
                     "nesterov, adam or adamw.")
  # (optax.chain of nothing fails: plain SGD without a clip is the identity.)
  direction = optax.chain(*chain) if chain else optax.identity()
  frozen = frozen_prefixes(cfg)
  if not frozen:
    return direction
  # Frozen parameters get a zero update and no optimizer state; the clip sees
  # only the trained ones. (Their gradients are still computed: the step's
  # grad_norm and finiteness check cover every parameter.)
  return optax.multi_transform({"train": direction, "frozen": optax.set_to_zero()},
                               lambda params: frozen_labels(params, frozen))


def frozen_prefixes(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """config.optim.frozen ('cell,key_proj', 'cnn/conv0', ...) as path prefixes."""
  return tuple(p.strip().strip("/") for p in (cfg.get("frozen") or "").split(",") if p.strip())


def frozen_labels(params, prefixes: tuple[str, ...]):
  """'frozen' / 'train' per parameter; a prefix that names nothing is an error."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  under = lambda key, p: key == p or key.startswith(p + "/")
  unknown = [p for p in prefixes if not any(under(k, p) for k in flat)]
  if unknown:
    top = sorted({k.split("/")[0] for k in flat})
    raise ValueError(f"config.optim.frozen={','.join(prefixes)!r}: {', '.join(unknown)} names no "
                     f"parameter; give paths of the parameter tree under {', '.join(top)}.")
  return flax.traverse_util.unflatten_dict(
      {k: "frozen" if any(under(k, p) for p in prefixes) else "train" for k in flat}, sep="/")


def make_lr_schedule(cfg: ml_collections.ConfigDict, num_steps: int | None = None
                     ) -> optax.Schedule:
  """Linear warmup over `cfg.warmup_steps`, then constant (`cfg.decay` 'none')
  or a cosine from `cfg.lr` down to `cfg.lr * cfg.end_lr_factor` at step
  `num_steps` ('cosine', the usual fine-tuning schedule; needs num_steps)."""
  decay = cfg.get("decay", "none")
  if decay == "cosine":
    if not num_steps or num_steps <= cfg.warmup_steps:
      raise ValueError(f"config.optim.decay='cosine' needs a training length longer than "
                       f"the {cfg.warmup_steps} warm-up steps (got {num_steps}); set "
                       "config.num_train_steps.")
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, cfg.warmup_steps, num_steps, end_value=cfg.lr * cfg.get("end_lr_factor", 0.0))
  if decay != "none":
    raise ValueError(f"config.optim.decay {decay!r}: use 'none' or 'cosine'.")
  if cfg.warmup_steps > 0:
    return optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
  return optax.constant_schedule(cfg.lr)


def make_plateau(cfg: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
  p = cfg.plateau
  return optax.contrib.reduce_on_plateau(
      factor=p.factor, patience=p.patience, rtol=p.rtol, atol=0.0,
      cooldown=p.cooldown, accumulation_size=1, min_scale=p.min_scale)


def plateau_value(metric_name: str, value: float) -> float:
  return -value if metric_name in MAXIMIZE else value


def update_plateau(plateau: optax.GradientTransformationExtraArgs, state, metric_name: str,
                   value: float):
  """One plateau update with a validation metric; returns the new state."""
  _, state = plateau.update(updates={}, state=state, value=plateau_value(metric_name, value))
  return state
