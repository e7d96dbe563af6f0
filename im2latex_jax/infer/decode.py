"""Greedy decoding and beam search over an autoregressive step function.

Both searches are generic over a step function

    step_fn(carry, tokens) -> (logits, new_carry)            or
    step_fn(carry, tokens) -> (logits, new_carry, aux)

where `tokens` is int32 `[B]` (the previous token, `bos_id` at the first
step), `logits` is `[B, V]` and `carry` is any pytree whose leaves have leading
dimension B (0-d leaves are passed through untouched, e.g. a shared step
counter). `aux` is an optional per-step output such as the attention weights
`[B, N]`; only `greedy_search(..., collect_aux=True)` records it.

A model plugs in by closing over its parameters and encoder output:

    enc = model.apply(variables, images, image_hw, method=model.encode)
    carry = model.apply(variables, enc, method=model.init_carry)
    def step_fn(carry, tokens):  # -> (logits, carry, attention)
      return model.apply(variables, enc, carry, tokens,
                         method=model.decode_step)

For beam search the encoder output must be expanded per beam as well. Tile
it once with `flatten_beam_dim(add_beam_dim(x, K))` and close over it: beams
are only reordered within their batch item, so the tiled copy stays valid and
is not gathered every step (putting it into the carry also works, at the cost
of one gather of `[B*K, N, D]` per step).

Both functions run one `lax.while_loop` with fixed shapes, so they jit once per
(batch, beam, max_len, carry shapes): wrap them as
`jax.jit(functools.partial(beam_search, step_fn, batch_size=..., ...))` or call
them inside a jitted `predict(params, images)`. The structure follows the Flax
wmt example's `decode.py`.

Outputs never contain BOS: position t holds the token generated at step t.
Sequences end with `eos_id` followed by PAD (0); `lengths` count the tokens up
to and including EOS (`max_len` for a sequence that never emitted EOS).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

PyTree = Any
StepFn = Callable[..., tuple]

PAD_ID = 0
# "Effective negative infinity" for masking scores. Finite, so that sums and
# divisions of masked scores never produce NaN.
NEG_INF = np.float32(-1.0e7)


class GreedyResult(NamedTuple):
  """Output of `greedy_search`."""
  tokens: jax.Array  # int32 [batch, max_len]: EOS then PAD after the end.
  logprobs: jax.Array  # float32 [batch]: total log-probability.
  token_logprobs: jax.Array  # float32 [batch, max_len]: 0 after the end.
  lengths: jax.Array  # int32 [batch]: tokens up to and including EOS.
  aux: jax.Array | None = None  # [batch, max_len, ...] if collect_aux.
  looped: jax.Array | None = None  # bool [batch]: stopped by loop_span.


class BeamResult(NamedTuple):
  """Output of `beam_search`, hypotheses sorted best first."""
  tokens: jax.Array  # int32 [batch, beam, max_len]: EOS then PAD after end.
  scores: jax.Array  # float32 [batch, beam]: logprobs / GNMT length penalty.
  logprobs: jax.Array  # float32 [batch, beam]: total log-probability.
  lengths: jax.Array  # int32 [batch, beam]: tokens up to and including EOS.


def gnmt_length_penalty(alpha: float | jax.Array, length) -> jax.Array:
  """GNMT length penalty ((5 + length) / 6) ** alpha; 1 for alpha = 0."""
  return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def _split_step_output(out: tuple) -> tuple[jax.Array, PyTree, Any]:
  if not isinstance(out, tuple) or len(out) not in (2, 3):
    raise ValueError('step_fn must return a tuple (logits, carry) or '
                     f'(logits, carry, aux), got {type(out).__name__}.')
  logits, carry = out[0], out[1]
  aux = out[2] if len(out) == 3 else None
  return logits.astype(jnp.float32), carry, aux


def _sequence_lengths(tokens: jax.Array, eos_id: int) -> jax.Array:
  """Tokens up to and including the first EOS; the full length without one."""
  is_eos = tokens == eos_id
  return jnp.where(is_eos.any(-1), jnp.argmax(is_eos, axis=-1) + 1,
                   tokens.shape[-1]).astype(jnp.int32)


# ------------------------------------------------------------------------------
# Greedy search.
# ------------------------------------------------------------------------------


@flax.struct.dataclass
class GreedyState:
  """Loop state of `greedy_search`; all shapes fixed."""
  cur_index: jax.Array  # int32 scalar: position being generated.
  tokens: jax.Array  # int32 [batch, max_len]
  last_tokens: jax.Array  # int32 [batch]: the input of the next step.
  token_logprobs: jax.Array  # float32 [batch, max_len]
  finished: jax.Array  # bool [batch]
  looped: jax.Array  # bool [batch]
  carry: PyTree  # leaves [batch, ...]
  aux: Any  # [batch, max_len, ...] or None


# Periods up to this are checked by the loop detector (`periodic_tail`).
MAX_LOOP_PERIOD = 6


def periodic_tail(tokens: jax.Array, end: jax.Array, span: int,
                  max_period: int = MAX_LOOP_PERIOD) -> jax.Array:
  """Whether tokens[:, end - span:end] repeats with a period <= max_period.

  Args:
    tokens: int32 [batch, L].
    end: int32 scalar, the number of tokens written so far.
    span: how many of the last tokens must be periodic (static).

  Returns:
    bool [batch]; False while end < span.
  """
  start = jnp.maximum(end - span, 0)
  window = lax.dynamic_slice_in_dim(tokens, start, span, axis=1)  # [B, span]
  hit = jnp.zeros(tokens.shape[:1], jnp.bool_)
  for n in range(1, max_period + 1):
    hit |= jnp.all(window[:, n:] == window[:, :-n], axis=1)
  return hit & (end >= span)


def greedy_search(step_fn: StepFn,
                  init_carry: PyTree,
                  batch_size: int,
                  *,
                  bos_id: int,
                  eos_id: int,
                  max_len: int,
                  collect_aux: bool = False,
                  loop_span: int = 0,
                  eos_bias: float = 0.0) -> GreedyResult:
  """Picks the most likely token at every step until all sequences hit EOS.

  Args:
    step_fn: `(carry, tokens [B]) -> (logits [B, V], carry[, aux [B, ...]])`.
    init_carry: pytree of arrays with leading dimension `batch_size`.
    batch_size: B.
    bos_id: token fed at the first step.
    eos_id: token that ends a sequence.
    max_len: number of tokens generated at most.
    collect_aux: record the third output of `step_fn` (e.g. attention
      weights) at every step into `GreedyResult.aux` `[B, max_len, ...]`
      (zeros after a sequence has ended). `step_fn` must then return it.
    loop_span: if > 0, a sequence whose last `loop_span` tokens repeat with a
      period of at most MAX_LOOP_PERIOD tokens (`\\! \\! \\! ...`) is stopped
      there and flagged in `GreedyResult.looped`, instead of running to
      max_len; it ends without EOS. 0 (or more than max_len): never.
    eos_bias: added to EOS's log-probability when the next token is chosen
      (< 0: a sequence ends only when EOS wins by more than -eos_bias nats;
      against a model that stops too early). The log-probabilities returned
      are the model's own, without it. 0: plain greedy.

  Returns:
    A `GreedyResult`.
  """
  bos = jnp.full((batch_size,), bos_id, jnp.int32)
  aux0 = None
  if collect_aux:
    # The shape of aux is known only from the step function; eval_shape traces
    # it without running it.
    out_shape = jax.eval_shape(step_fn, init_carry, bos)
    aux_shape = out_shape[2] if len(out_shape) == 3 else None
    if aux_shape is None:
      raise ValueError('collect_aux=True needs step_fn to return '
                       '(logits, carry, aux); it returned (logits, carry).')
    aux0 = jnp.zeros((batch_size, max_len) + aux_shape.shape[1:],
                     aux_shape.dtype)

  init_state = GreedyState(
      cur_index=jnp.array(0, jnp.int32),
      tokens=jnp.full((batch_size, max_len), PAD_ID, jnp.int32),
      last_tokens=bos,
      token_logprobs=jnp.zeros((batch_size, max_len), jnp.float32),
      finished=jnp.zeros((batch_size,), jnp.bool_),
      looped=jnp.zeros((batch_size,), jnp.bool_),
      carry=init_carry,
      aux=aux0)

  def cond_fn(state: GreedyState) -> jax.Array:
    return (state.cur_index < max_len) & ~jnp.all(state.finished)

  def body_fn(state: GreedyState) -> GreedyState:
    t = state.cur_index
    logits, carry, aux = _split_step_output(
        step_fn(state.carry, state.last_tokens))
    log_probs = jax.nn.log_softmax(logits)  # [batch, vocab]
    scores = log_probs if eos_bias == 0.0 else log_probs.at[:, eos_id].add(eos_bias)
    next_tokens = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    next_logprobs = jnp.take_along_axis(
        log_probs, next_tokens[:, None], axis=-1)[:, 0]
    # Sequences that already ended emit PAD at zero cost.
    next_tokens = jnp.where(state.finished, PAD_ID, next_tokens)
    next_logprobs = jnp.where(state.finished, 0.0, next_logprobs)
    new_aux = state.aux
    if collect_aux:
      mask = (~state.finished).reshape((-1,) + (1,) * (aux.ndim - 1))
      step_aux = jnp.where(mask, aux, 0).astype(state.aux.dtype)
      new_aux = state.aux.at[:, t].set(step_aux)
    tokens = state.tokens.at[:, t].set(next_tokens)
    finished = state.finished | (next_tokens == eos_id)
    looped = state.looped
    if 0 < loop_span <= max_len:
      looped = looped | (~finished & periodic_tail(tokens, t + 1, loop_span))
      finished = finished | looped
    return GreedyState(
        cur_index=t + 1,
        tokens=tokens,
        last_tokens=next_tokens,
        token_logprobs=state.token_logprobs.at[:, t].set(next_logprobs),
        finished=finished,
        looped=looped,
        carry=carry,
        aux=new_aux)

  final = lax.while_loop(cond_fn, body_fn, init_state)
  return GreedyResult(
      tokens=final.tokens,
      logprobs=final.token_logprobs.sum(-1),
      token_logprobs=final.token_logprobs,
      lengths=_sequence_lengths(final.tokens, eos_id),
      aux=final.aux,
      looped=final.looped)


# ------------------------------------------------------------------------------
# Beam handling helpers.
# ------------------------------------------------------------------------------


def add_beam_dim(x: jax.Array, beam_size: int) -> jax.Array:
  """Tiles `[batch, ...]` into `[batch, beam, ...]`; 0-d arrays pass through."""
  if x.ndim == 0:
    return x
  return jnp.repeat(jnp.expand_dims(x, 1), beam_size, axis=1)


def flatten_beam_dim(x: jax.Array) -> jax.Array:
  """`[batch, beam, ...] -> [batch * beam, ...]`; 0-d arrays pass through."""
  if x.ndim == 0:
    return x
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def unflatten_beam_dim(x: jax.Array, batch_size: int,
                       beam_size: int) -> jax.Array:
  """`[batch * beam, ...] -> [batch, beam, ...]`; 0-d arrays pass through."""
  if x.ndim == 0:
    return x
  if x.shape[0] != batch_size * beam_size:
    raise ValueError(f'leading dimension {x.shape[0]} is not batch_size * '
                     f'beam_size = {batch_size} * {beam_size}; every carry '
                     'leaf must have the batch as its leading dimension.')
  return x.reshape((batch_size, beam_size) + x.shape[1:])


def gather_beams(nested: PyTree, beam_indices: jax.Array, batch_size: int,
                 new_beam_size: int) -> PyTree:
  """Selects beams per batch item: `[batch, old_beam, ...]` leaves ->
  `[batch, new_beam, ...]`, with `beam_indices` int `[batch, new_beam]`."""
  batch_indices = jnp.broadcast_to(
      jnp.arange(batch_size)[:, None], (batch_size, new_beam_size))

  def gather(x):
    if x.ndim == 0:
      return x
    return x[batch_indices, beam_indices]

  return jax.tree_util.tree_map(gather, nested)


# ------------------------------------------------------------------------------
# Beam search.
# ------------------------------------------------------------------------------


@flax.struct.dataclass
class BeamState:
  """Loop state of `beam_search`; all shapes fixed."""
  cur_index: jax.Array  # int32 scalar: position being generated.
  # Live hypotheses (no EOS yet).
  live_logprobs: jax.Array  # float32 [batch, beam]
  live_seqs: jax.Array  # int32 [batch, beam, max_len]
  live_tokens: jax.Array  # int32 [batch, beam]: the input of the next step.
  # Finished hypotheses (ended with EOS), best first.
  finished_scores: jax.Array  # float32 [batch, beam]
  finished_logprobs: jax.Array  # float32 [batch, beam]
  finished_seqs: jax.Array  # int32 [batch, beam, max_len]
  # Which finished slots hold a real hypothesis rather than filler.
  finished_flags: jax.Array  # bool [batch, beam]
  carry: PyTree  # leaves [batch, beam, ...]


def beam_init(init_carry: PyTree, batch_size: int, beam_size: int,
              max_len: int, bos_id: int) -> BeamState:
  """Initial state: one live beam per item (the others masked), no finished."""
  # Only beam 0 is live at first; identical copies would fill the beam with
  # duplicates of the same hypothesis.
  live_logprobs = jnp.tile(
      jnp.array([0.0] + [NEG_INF] * (beam_size - 1), jnp.float32),
      (batch_size, 1))
  return BeamState(
      cur_index=jnp.array(0, jnp.int32),
      live_logprobs=live_logprobs,
      live_seqs=jnp.full((batch_size, beam_size, max_len), PAD_ID, jnp.int32),
      live_tokens=jnp.full((batch_size, beam_size), bos_id, jnp.int32),
      finished_scores=jnp.full((batch_size, beam_size), NEG_INF, jnp.float32),
      finished_logprobs=jnp.full((batch_size, beam_size), NEG_INF,
                                 jnp.float32),
      finished_seqs=jnp.full((batch_size, beam_size, max_len), PAD_ID,
                             jnp.int32),
      finished_flags=jnp.zeros((batch_size, beam_size), jnp.bool_),
      carry=jax.tree_util.tree_map(lambda x: add_beam_dim(x, beam_size),
                                   init_carry))


def beam_search(step_fn: StepFn,
                init_carry: PyTree,
                batch_size: int,
                *,
                beam_size: int,
                bos_id: int,
                eos_id: int,
                max_len: int,
                length_penalty: float | jax.Array = 0.0) -> BeamResult:
  """Beam search with GNMT length normalisation.

  A hypothesis that ends with EOS at length L scores
  `logprob / ((5 + L) / 6) ** length_penalty`. Finished hypotheses always rank
  above unfinished ones; an item with fewer than `beam_size` finished
  hypotheses after `max_len` steps fills the remaining slots with its best
  live (truncated) ones, scored at length `max_len`. Slots that hold no real
  hypothesis at all (possible only when the vocabulary is tiny) score
  about `NEG_INF`.

  Args:
    step_fn: `(carry, tokens [B*K]) -> (logits [B*K, V], carry[, aux])`; a
      third output is ignored.
    init_carry: pytree of arrays with leading dimension `batch_size`; it is
      expanded to `[batch_size * beam_size, ...]` for `step_fn`.
    batch_size: B.
    beam_size: K.
    bos_id: token fed at the first step.
    eos_id: token that ends a hypothesis.
    max_len: number of tokens generated at most.
    length_penalty: GNMT alpha; 0 ranks by total log-probability.

  Returns:
    A `BeamResult`, best hypothesis first.
  """
  if beam_size < 1:
    raise ValueError(f'beam_size={beam_size}; it must be at least 1.')
  alpha = length_penalty
  state0 = beam_init(init_carry, batch_size, beam_size, max_len, bos_id)

  def cond_fn(state: BeamState) -> jax.Array:
    # A live hypothesis only loses log-probability as it grows, so its best
    # possible final score uses the largest penalty still reachable (at
    # max_len for alpha > 0, at the next step for alpha < 0).
    best_penalty = jnp.maximum(
        gnmt_length_penalty(alpha, state.cur_index + 1),
        gnmt_length_penalty(alpha, max_len))
    best_live = jnp.max(state.live_logprobs, axis=1) / best_penalty  # [batch]
    worst_finished = jnp.where(
        jnp.all(state.finished_flags, axis=1),
        jnp.min(state.finished_scores, axis=1), NEG_INF)  # [batch]
    # Stop once no live hypothesis can enter any item's full finished set.
    search_done = jnp.all(worst_finished > best_live)
    return (state.cur_index < max_len) & ~search_done

  def body_fn(state: BeamState) -> BeamState:
    t = state.cur_index
    # {[batch, beam, ...]} -> {[batch * beam, ...]} for the model.
    flat_carry = jax.tree_util.tree_map(flatten_beam_dim, state.carry)
    flat_logits, new_flat_carry, _ = _split_step_output(
        step_fn(flat_carry, flatten_beam_dim(state.live_tokens)))
    logits = unflatten_beam_dim(flat_logits, batch_size, beam_size)
    new_carry = jax.tree_util.tree_map(
        lambda x: unflatten_beam_dim(x, batch_size, beam_size),
        new_flat_carry)

    # [batch, beam, vocab]
    log_probs = (jax.nn.log_softmax(logits) +
                 state.live_logprobs[:, :, None])
    vocab_size = log_probs.shape[-1]
    # We take the top 2k candidates so that even if k of them end with EOS
    # (at most one EOS per beam), k live ones remain to continue the search.
    num_candidates = 2 * beam_size
    # [batch, 2 * beam]
    cand_logprobs, cand_indices = lax.top_k(
        log_probs.reshape(batch_size, beam_size * vocab_size), num_candidates)
    cand_beams = cand_indices // vocab_size
    cand_tokens = (cand_indices % vocab_size).astype(jnp.int32)
    # [batch, 2 * beam, max_len]
    cand_seqs = gather_beams(state.live_seqs, cand_beams, batch_size,
                             num_candidates)
    cand_seqs = lax.dynamic_update_slice(
        cand_seqs, cand_tokens[:, :, None], (0, 0, t))
    # Candidates grown from masked filler beams are not real hypotheses.
    real = cand_logprobs > NEG_INF / 2
    newly_finished = (cand_tokens == eos_id) & real

    # Live: the best k candidates that did not just end.
    live_candidates = jnp.where(newly_finished | ~real, NEG_INF,
                                cand_logprobs)
    _, live_indices = lax.top_k(live_candidates, beam_size)  # [batch, beam]
    live_seqs, live_logprobs, live_tokens, live_parents = gather_beams(
        (cand_seqs, live_candidates, cand_tokens, cand_beams), live_indices,
        batch_size, beam_size)
    carry = gather_beams(new_carry, live_parents, batch_size, beam_size)

    # Finished: merge the new ones into the best k so far.
    new_scores = jnp.where(
        newly_finished, cand_logprobs / gnmt_length_penalty(alpha, t + 1),
        NEG_INF)
    all_scores = jnp.concatenate([state.finished_scores, new_scores], 1)
    _, fin_indices = lax.top_k(all_scores, beam_size)  # [batch, beam]
    finished_scores, finished_logprobs, finished_seqs, finished_flags = (
        gather_beams(
            (all_scores,
             jnp.concatenate([state.finished_logprobs,
                              jnp.where(newly_finished, cand_logprobs,
                                        NEG_INF)], 1),
             jnp.concatenate([state.finished_seqs, cand_seqs], 1),
             jnp.concatenate([state.finished_flags, newly_finished], 1)),
            fin_indices, batch_size, beam_size))

    return BeamState(
        cur_index=t + 1,
        live_logprobs=live_logprobs,
        live_seqs=live_seqs,
        live_tokens=live_tokens,
        finished_scores=finished_scores,
        finished_logprobs=finished_logprobs,
        finished_seqs=finished_seqs,
        finished_flags=finished_flags,
        carry=carry)

  final = lax.while_loop(cond_fn, body_fn, state0)

  # Finished hypotheses first (by score), then live ones (by score) for items
  # that finished fewer than k.
  live_scores = final.live_logprobs / gnmt_length_penalty(alpha, max_len)
  scores = jnp.concatenate([final.finished_scores, live_scores], 1)
  unfinished = jnp.concatenate(
      [~final.finished_flags, jnp.ones_like(final.finished_flags)], 1)
  order = jnp.lexsort((-scores, unfinished), axis=-1)[:, :beam_size]
  tokens, scores, logprobs = gather_beams(
      (jnp.concatenate([final.finished_seqs, final.live_seqs], 1), scores,
       jnp.concatenate([final.finished_logprobs, final.live_logprobs], 1)),
      order, batch_size, beam_size)
  return BeamResult(tokens=tokens, scores=scores, logprobs=logprobs,
                    lengths=_sequence_lengths(tokens, eos_id))
