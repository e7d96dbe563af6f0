"""Tests for greedy decoding and beam search (im2latex_jax/infer/decode.py)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from im2latex_jax.infer import decode

PAD, BOS, EOS, A, B = 0, 1, 2, 3, 4
TINY = 1e-9


def table_step_fn(probs):
  """A step function whose next-token distribution depends on the last token.

  Args:
    probs: [vocab, vocab] array, row = previous token, column = next token.

  Returns:
    step_fn(carry, tokens) with a dummy [B] carry.
  """
  log_table = jnp.log(jnp.asarray(probs, jnp.float32) + TINY)

  def step_fn(carry, tokens):
    return log_table[tokens], carry + 1

  return step_fn


def toy_probs(rows):
  """[5, 5] table from {prev: {next: p}}; unlisted rows are uniform."""
  probs = np.full((5, 5), 0.2, np.float32)
  for prev, row in rows.items():
    probs[prev] = 0.0
    for nxt, p in row.items():
      probs[prev, nxt] = p
  return probs


# Greedy takes A (0.6) then EOS (0.34): p = 0.204. The best sequence is
# B EOS: 0.4 * 0.9 = 0.36.
GARDEN_PATH = toy_probs({
    BOS: {A: 0.6, B: 0.4},
    A: {EOS: 0.34, A: 0.33, B: 0.33},
    B: {EOS: 0.9, A: 0.05, B: 0.05},
})


def rnn_step_fn(key, vocab_size=7, hidden=8, max_len=6, scale=3.0):
  """A random Elman RNN that is forced to emit EOS at the last step."""
  k1, k2, k3 = jax.random.split(key, 3)
  emb = jax.random.normal(k1, (vocab_size, hidden))
  w_h = jax.random.normal(k2, (hidden, hidden)) / np.sqrt(hidden)
  w_o = jax.random.normal(k3, (hidden, vocab_size)) * scale / np.sqrt(hidden)
  force_eos = jnp.full((vocab_size,), -1e4).at[EOS].set(0.0)

  def step_fn(carry, tokens):
    h, t = carry
    h = jnp.tanh(h @ w_h + emb[tokens])
    logits = h @ w_o
    logits = jnp.where((t >= max_len - 1)[:, None], force_eos, logits)
    return logits, (h, t + 1)

  return step_fn


def rnn_init_carry(key, batch_size, hidden=8):
  return (jax.random.normal(key, (batch_size, hidden)),
          jnp.zeros((batch_size,), jnp.int32))


def teacher_forced_logprob(step_fn, init_carry, tokens, eos_id=EOS):
  """Log-probability of `tokens` [B, T] (up to and including EOS)."""
  carry, prev, total = init_carry, jnp.full(tokens.shape[:1], BOS), 0.0
  alive = jnp.ones(tokens.shape[:1], bool)
  for t in range(tokens.shape[1]):
    logits, carry = step_fn(carry, prev)[:2]
    lp = jax.nn.log_softmax(logits)[jnp.arange(tokens.shape[0]), tokens[:, t]]
    total = total + jnp.where(alive, lp, 0.0)
    alive = alive & (tokens[:, t] != eos_id)
    prev = tokens[:, t]
  return np.asarray(total)


def test_beam_helpers():
  x = jnp.arange(6).reshape(2, 3)
  tiled = decode.add_beam_dim(x, 4)  # [2, 4, 3]
  assert tiled.shape == (2, 4, 3)
  np.testing.assert_array_equal(tiled[:, 2], x)
  flat = decode.flatten_beam_dim(tiled)
  assert flat.shape == (8, 3)
  np.testing.assert_array_equal(decode.unflatten_beam_dim(flat, 2, 4), tiled)
  beams = jnp.arange(2 * 3).reshape(2, 3) * 10  # [batch, beam]
  got = decode.gather_beams(beams, jnp.array([[2, 2], [0, 1]]), 2, 2)
  np.testing.assert_array_equal(got, [[20, 20], [30, 40]])
  scalar = jnp.array(7)
  assert decode.add_beam_dim(scalar, 4) is scalar
  with pytest.raises(ValueError, match='batch_size'):
    decode.unflatten_beam_dim(flat, 3, 4)


def test_beam_finds_best_path_greedy_does_not():
  step_fn = table_step_fn(GARDEN_PATH)
  carry = jnp.zeros((1,), jnp.int32)
  kw = dict(bos_id=BOS, eos_id=EOS, max_len=5)
  greedy = decode.greedy_search(step_fn, carry, 1, **kw)
  np.testing.assert_array_equal(greedy.tokens, [[A, EOS, PAD, PAD, PAD]])
  np.testing.assert_allclose(greedy.logprobs, [np.log(0.6 * 0.34)], rtol=1e-5)
  np.testing.assert_allclose(greedy.token_logprobs[0, :2],
                             np.log([0.6, 0.34]), rtol=1e-5)
  np.testing.assert_array_equal(greedy.lengths, [2])

  beam = decode.beam_search(step_fn, carry, 1, beam_size=2, **kw)
  np.testing.assert_array_equal(beam.tokens[0, 0], [B, EOS, PAD, PAD, PAD])
  np.testing.assert_array_equal(beam.tokens[0, 1], [A, EOS, PAD, PAD, PAD])
  np.testing.assert_allclose(beam.logprobs[0],
                             np.log([0.4 * 0.9, 0.6 * 0.34]), rtol=1e-5)
  np.testing.assert_allclose(beam.scores, beam.logprobs)  # alpha = 0.
  np.testing.assert_array_equal(beam.lengths, [[2, 2]])


def test_greedy_eos_bias_ends_only_when_eos_wins_by_the_margin():
  # After A, EOS (0.34) beats A (0.33) by log(0.34 / 0.33) = 0.030 nats.
  step_fn = table_step_fn(GARDEN_PATH)
  carry = jnp.zeros((1,), jnp.int32)
  kw = dict(bos_id=BOS, eos_id=EOS, max_len=5)
  plain = decode.greedy_search(step_fn, carry, 1, **kw)
  small = decode.greedy_search(step_fn, carry, 1, eos_bias=-0.02, **kw)
  np.testing.assert_array_equal(small.tokens, plain.tokens)  # [A, EOS, ...]
  late = decode.greedy_search(step_fn, carry, 1, eos_bias=-0.04, **kw)
  np.testing.assert_array_equal(late.tokens, [[A, A, A, A, A]])  # never ends
  # The log-probabilities are the model's own, without the bias.
  np.testing.assert_allclose(late.logprobs, [np.log(0.6) + 4 * np.log(0.33)], rtol=1e-5)
  np.testing.assert_array_equal(late.lengths, [5])


def test_beam_size_one_equals_greedy_on_toy():
  step_fn = table_step_fn(GARDEN_PATH)
  carry = jnp.zeros((3,), jnp.int32)
  kw = dict(bos_id=BOS, eos_id=EOS, max_len=5)
  greedy = decode.greedy_search(step_fn, carry, 3, **kw)
  beam = decode.beam_search(step_fn, carry, 3, beam_size=1, **kw)
  np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
  np.testing.assert_allclose(beam.logprobs[:, 0], greedy.logprobs, rtol=1e-6)
  np.testing.assert_array_equal(beam.lengths[:, 0], greedy.lengths)


@pytest.mark.parametrize('seed', range(4))
def test_beam_at_least_greedy_on_random_rnn(seed):
  batch, max_len = 5, 6
  k_model, k_carry = jax.random.split(jax.random.key(seed))
  step_fn = rnn_step_fn(k_model, max_len=max_len)
  carry = rnn_init_carry(k_carry, batch)
  kw = dict(bos_id=BOS, eos_id=EOS, max_len=max_len)
  greedy = decode.greedy_search(step_fn, carry, batch, **kw)
  beam1 = decode.beam_search(step_fn, carry, batch, beam_size=1, **kw)
  beam4 = decode.beam_search(step_fn, carry, batch, beam_size=4, **kw)

  # Beam k=1 follows the greedy path but may keep an earlier runner-up EOS.
  assert np.all(beam1.logprobs[:, 0] >= greedy.logprobs - 1e-5)
  assert np.all(beam4.scores[:, 0] >= greedy.logprobs - 1e-5)
  assert np.all(beam4.scores[:, 0] >= beam1.scores[:, 0] - 1e-5)
  # Sorted best first.
  assert np.all(np.diff(np.asarray(beam4.scores), axis=1) <= 1e-6)
  # The reported log-probabilities are those of the returned sequences.
  np.testing.assert_allclose(
      greedy.logprobs, teacher_forced_logprob(step_fn, carry, greedy.tokens),
      rtol=1e-5, atol=1e-5)
  for k in range(4):
    np.testing.assert_allclose(
        beam4.logprobs[:, k],
        teacher_forced_logprob(step_fn, carry, beam4.tokens[:, k]),
        rtol=1e-5, atol=1e-5)
  # Every sequence ends (EOS is forced at the last step).
  assert np.all(np.asarray(beam4.tokens == EOS).sum(-1) == 1)


def test_wide_beam_is_exact_on_tiny_problem():
  """With k >= all prefixes, beam search equals brute-force enumeration."""
  vocab, max_len, batch = 5, 4, 2
  k_model, k_carry = jax.random.split(jax.random.key(7))
  step_fn = rnn_step_fn(k_model, vocab_size=vocab, max_len=max_len, scale=1.0)
  carry = rnn_init_carry(k_carry, batch)
  beam = decode.beam_search(step_fn, carry, batch, beam_size=vocab**3,
                            bos_id=BOS, eos_id=EOS, max_len=max_len)
  # All sequences over the vocabulary, of length max_len; scoring stops at EOS.
  seqs = np.array(list(itertools.product(range(vocab), repeat=max_len)))
  best = np.full(batch, -np.inf)
  for b in range(batch):
    carry_b = jax.tree_util.tree_map(
        lambda x: jnp.repeat(x[b:b + 1], len(seqs), 0), carry)
    lps = teacher_forced_logprob(step_fn, carry_b, jnp.asarray(seqs))
    has_eos = (seqs == EOS).any(-1)
    best[b] = lps[has_eos].max()
  np.testing.assert_allclose(beam.logprobs[:, 0], best, rtol=1e-5)


def test_eos_handling_and_early_stop():
  """Row b emits EOS at step b; afterwards PAD, and the loop stops early."""
  batch, vocab, max_len = 3, 6, 10
  calls = []

  def step_fn(carry, tokens):
    jax.debug.callback(lambda: calls.append(1))
    t = carry[:, 0]
    row = carry[:, 1]
    nxt = jnp.where(t >= row, EOS, A + (t % 2))
    logits = jax.nn.one_hot(nxt, vocab) * 10.0
    return logits, carry.at[:, 0].add(1)

  carry = jnp.stack([jnp.zeros(batch, jnp.int32),
                     jnp.arange(batch, dtype=jnp.int32)], 1)
  res = decode.greedy_search(step_fn, carry, batch, bos_id=BOS, eos_id=EOS,
                             max_len=max_len)
  expected = np.zeros((batch, max_len), np.int32)
  expected[0, 0] = EOS
  expected[1, :2] = [A, EOS]
  expected[2, :3] = [A, B, EOS]
  np.testing.assert_array_equal(res.tokens, expected)
  np.testing.assert_array_equal(res.lengths, [1, 2, 3])
  assert np.all(np.asarray(res.token_logprobs)[expected == PAD] == 0.0)
  jax.effects_barrier()
  assert len(calls) == 3  # Not max_len: the loop stopped when all ended.

  calls.clear()
  beam = decode.beam_search(step_fn, carry, batch, beam_size=2, bos_id=BOS,
                            eos_id=EOS, max_len=max_len)
  np.testing.assert_array_equal(beam.tokens[:, 0], expected)
  np.testing.assert_array_equal(beam.lengths[:, 0], [1, 2, 3])
  jax.effects_barrier()
  assert len(calls) < max_len


def test_unfinished_hypotheses_rank_after_finished_ones():
  probs = toy_probs({BOS: {A: 1.0}, A: {A: 0.9, B: 0.1}})
  kw = dict(bos_id=BOS, eos_id=EOS, max_len=4)
  carry = jnp.zeros((2,), jnp.int32)
  # EOS impossible (-inf): every hypothesis is truncated at max_len.
  no_eos = jnp.log(jnp.asarray(probs)).at[:, EOS].set(-jnp.inf)
  step_fn = lambda carry, tokens: (no_eos[tokens], carry)
  greedy = decode.greedy_search(step_fn, carry, 2, **kw)
  np.testing.assert_array_equal(greedy.tokens, [[A] * 4] * 2)
  np.testing.assert_array_equal(greedy.lengths, [4, 4])
  beam = decode.beam_search(step_fn, carry, 2, beam_size=2, **kw)
  np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
  np.testing.assert_array_equal(beam.tokens[:, 1], [[A, A, A, B]] * 2)
  np.testing.assert_array_equal(beam.lengths, [[4, 4]] * 2)
  np.testing.assert_allclose(beam.logprobs[:, 0], greedy.logprobs, rtol=1e-5)
  np.testing.assert_allclose(beam.logprobs[:, 1], np.log(0.9**2 * 0.1),
                             rtol=1e-5)

  # EOS merely improbable (1e-9): a hypothesis that ends beats any truncated
  # one, as in the wmt example, while greedy still runs to max_len.
  step_fn = table_step_fn(probs)
  greedy = decode.greedy_search(step_fn, carry, 2, **kw)
  np.testing.assert_array_equal(greedy.lengths, [4, 4])
  beam = decode.beam_search(step_fn, carry, 2, beam_size=2, **kw)
  np.testing.assert_array_equal(beam.tokens[:, 0, 0], [EOS, EOS])
  np.testing.assert_array_equal(beam.lengths[:, 0], [1, 1])


def test_length_penalty_changes_ranking():
  # [EOS]: p = 0.4, length 1.  [A, EOS]: p = 0.35 * 0.95 = 0.3325, length 2.
  step_fn = table_step_fn(toy_probs({
      BOS: {EOS: 0.4, A: 0.35, B: 0.25},
      A: {EOS: 0.95, A: 0.025, B: 0.025},
      B: {EOS: 0.95, A: 0.025, B: 0.025},
  }))
  carry = jnp.zeros((1,), jnp.int32)
  kw = dict(beam_size=2, bos_id=BOS, eos_id=EOS, max_len=6)
  short, long = [EOS, PAD], [A, EOS]
  lp_short, lp_long = np.log(0.4), np.log(0.35 * 0.95)

  plain = decode.beam_search(step_fn, carry, 1, **kw)
  np.testing.assert_array_equal(plain.tokens[0, :, :2], [short, long])
  np.testing.assert_allclose(plain.scores[0], [lp_short, lp_long], rtol=1e-5)

  alpha = 2.0
  penalised = decode.beam_search(step_fn, carry, 1, length_penalty=alpha, **kw)
  score_short = lp_short / ((5 + 1) / 6)**alpha
  score_long = lp_long / ((5 + 2) / 6)**alpha
  assert score_long > score_short  # The hand computation flips the order.
  np.testing.assert_array_equal(penalised.tokens[0, :, :2], [long, short])
  np.testing.assert_allclose(penalised.scores[0], [score_long, score_short],
                             rtol=1e-5)
  np.testing.assert_allclose(penalised.logprobs[0], [lp_long, lp_short],
                             rtol=1e-5)
  np.testing.assert_array_equal(penalised.lengths[0], [2, 1])


def test_greedy_collects_aux():
  batch, n, max_len = 2, 3, 5

  def step_fn(carry, tokens):
    t, row = carry  # Row b emits EOS at step b + 1.
    logits = jnp.where((t > row)[:, None],
                       jax.nn.one_hot(EOS, 5), jax.nn.one_hot(A, 5)) * 10.0
    aux = jnp.broadcast_to((t + 1)[:, None], t.shape + (n,))
    return logits, (t + 1, row), aux.astype(jnp.float32)

  carry = (jnp.zeros((batch,), jnp.int32), jnp.arange(batch))
  res = decode.greedy_search(step_fn, carry, batch, bos_id=BOS, eos_id=EOS,
                             max_len=max_len, collect_aux=True)
  np.testing.assert_array_equal(res.lengths, [2, 3])
  assert res.aux.shape == (batch, max_len, n)
  expected = np.zeros((batch, max_len, n), np.float32)
  expected[0, :2] = np.array([1, 2])[:, None]
  expected[1, :3] = np.array([1, 2, 3])[:, None]
  np.testing.assert_array_equal(res.aux, expected)
  # Without collect_aux the third output is ignored, in both searches.
  assert decode.greedy_search(step_fn, carry, batch, bos_id=BOS, eos_id=EOS,
                              max_len=max_len).aux is None
  decode.beam_search(step_fn, carry, batch, beam_size=2, bos_id=BOS,
                     eos_id=EOS, max_len=max_len)


def test_no_retrace_across_calls():
  batch, hidden, vocab, max_len = 3, 8, 7, 6
  traces = {'n': 0}

  def make_step_fn(params):
    def step_fn(carry, tokens):
      traces['n'] += 1
      h = jnp.tanh(carry @ params['w_h'] + params['emb'][tokens])
      return h @ params['w_o'], h
    return step_fn

  @jax.jit
  def predict(params, h0):
    step_fn = make_step_fn(params)
    return (decode.beam_search(step_fn, h0, batch, beam_size=3, bos_id=BOS,
                               eos_id=EOS, max_len=max_len),
            decode.greedy_search(step_fn, h0, batch, bos_id=BOS, eos_id=EOS,
                                 max_len=max_len))

  def params_for(seed):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    return ({'w_h': jax.random.normal(k1, (hidden, hidden)),
             'emb': jax.random.normal(k2, (vocab, hidden)),
             'w_o': jax.random.normal(k3, (hidden, vocab))},
            jax.random.normal(k4, (batch, hidden)))

  jax.block_until_ready(predict(*params_for(0)))
  after_first = traces['n']
  assert after_first > 0
  jax.block_until_ready(predict(*params_for(1)))
  assert traces['n'] == after_first

  # The functools.partial style, step function closed over.
  traces['n'] = 0
  params, h0 = params_for(2)
  search = jax.jit(functools.partial(
      decode.beam_search, make_step_fn(params), batch_size=batch,
      beam_size=2, bos_id=BOS, eos_id=EOS, max_len=max_len,
      length_penalty=0.6))
  jax.block_until_ready(search(h0))
  after_first = traces['n']
  jax.block_until_ready(search(h0 + 1.0))
  assert traces['n'] == after_first


def test_greedy_loop_detection_stops_a_runaway():
  # Row 0 of the batch loops A B A B ... forever; row 1 says A then EOS. With
  # loop_span=6 row 0 stops after exactly 6 tokens (the first moment its
  # last 6 are periodic), flagged; row 1 is untouched; without it, row 0
  # runs to max_len.
  max_len = 40
  probs = toy_probs({BOS: {A: 1.0}, A: {B: 1.0}, B: {A: 1.0}})
  table = jnp.log(jnp.asarray(probs) + TINY)
  eos_row = jnp.log(jnp.asarray(toy_probs({BOS: {A: 1.0}, A: {EOS: 1.0}})) + TINY)

  def step_fn(carry, tokens):
    logits = jnp.where((carry == 1)[:, None], eos_row[tokens], table[tokens])
    return logits, carry

  carry = jnp.array([0, 1], jnp.int32)
  kw = dict(bos_id=BOS, eos_id=EOS, max_len=max_len)
  looped = decode.greedy_search(step_fn, carry, 2, loop_span=6, **kw)
  np.testing.assert_array_equal(looped.looped, [True, False])
  np.testing.assert_array_equal(np.asarray(looped.tokens)[0, :7], [A, B, A, B, A, B, PAD])
  np.testing.assert_array_equal(np.asarray(looped.tokens)[1, :2], [A, EOS])
  free = decode.greedy_search(step_fn, carry, 2, **kw)
  assert (np.asarray(free.tokens)[0] != PAD).all()  # ran to max_len
  assert not np.asarray(free.looped).any()


def test_periodic_tail_periods():
  toks = jnp.array([[5, 6, 7, 5, 6, 7, 5, 6, 7],    # period 3
                    [5, 6, 7, 8, 9, 3, 4, 5, 6],    # none
                    [1, 2, 3, 4, 5, 6, 7, 1, 2]])   # period 7 > MAX: no
  np.testing.assert_array_equal(decode.periodic_tail(toks, jnp.int32(9), 9), [True, False, False])
  # Not enough tokens yet.
  np.testing.assert_array_equal(decode.periodic_tail(toks, jnp.int32(5), 9), [False] * 3)
