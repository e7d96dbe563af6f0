"""Text metrics against numbers computed by hand."""

import math

import pytest
import sacrebleu

from im2latex_jax.evaluation import metrics


def test_bleu_identical_is_100():
  refs = ['a b c d e f', 'x y z w']
  assert metrics.corpus_bleu(refs, refs) == pytest.approx(100.0)


def test_bleu_hand_computed():
  # 1-grams 7/8, 2-grams (3+2)/6, 3-grams (2+1)/4, 4-grams (1+0)/2; equal
  # lengths, so no brevity penalty.
  refs = ['a b c d', 'e f g h']
  hyps = ['a b c d', 'e f g x']
  expected = 100 * (7 / 8 * 5 / 6 * 3 / 4 * 1 / 2) ** 0.25
  assert metrics.corpus_bleu(refs, hyps) == pytest.approx(expected)
  assert expected == pytest.approx(72.3127, abs=1e-3)


def test_bleu_missing_prediction_is_empty_and_penalised():
  # All precisions 1 on the first sentence; corpus lengths 4 vs 8 give
  # BP = exp(1 - 8/4) = e^-1.
  refs = ['a b c d', 'e f g h']
  assert metrics.corpus_bleu(refs, ['a b c d', None]) == pytest.approx(
      100 * math.exp(-1))
  assert metrics.corpus_bleu(refs, ['a b c d', '']) == pytest.approx(
      100 * math.exp(-1))


def test_bleu_zero_precision_and_all_empty():
  # No 4-gram in common: multi-bleu (no smoothing) gives 0.
  assert metrics.corpus_bleu(['a b c d'], ['a b c e']) == 0.0
  assert metrics.corpus_bleu(['a b'], [None]) == 0.0


def test_bleu_longer_hypothesis_has_no_penalty():
  # 1: 4/5, 2: 3/4, 3: 2/3, 4: 1/2; hypothesis longer than the reference.
  got = metrics.corpus_bleu(['a b c d'], ['a b c d e'])
  assert got == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)


def test_bleu_agrees_with_sacrebleu_unsmoothed():
  refs = ['\\frac { a } { b } + c', 'x ^ { 2 } = y', 'a b c d e f g',
          '\\alpha _ { i } \\beta']
  hyps = ['\\frac { a } { b } - c', 'x ^ { 2 } = y', 'a b c d e f',
          '\\alpha _ { j } \\beta']
  ours = metrics.corpus_bleu(refs, hyps)
  theirs = sacrebleu.corpus_bleu(hyps, [refs], tokenize='none',
                                 smooth_method='none', force=True).score
  assert ours == pytest.approx(theirs, abs=1e-9)


def test_edit_accuracy_hand_computed():
  # lev('a b c', 'a x c') = 1, lev('d e', '') = 2; Σ max lengths = 3 + 2.
  refs = ['a b c', 'd e']
  assert metrics.edit_accuracy(refs, ['a x c', None]) == pytest.approx(1 - 3 / 5)
  assert metrics.edit_accuracy(refs, refs) == 1.0
  # Longer prediction: lev = 2 insertions, max length 4.
  assert metrics.edit_accuracy(['a b'], ['a b c d']) == pytest.approx(0.5)
  # Tokens, not characters: '\\alpha' vs '\\beta' is one substitution.
  assert metrics.edit_accuracy(['\\alpha x'], ['\\beta x']) == pytest.approx(0.5)


def test_exact_match_and_text_metrics():
  refs = ['a b', 'c', 'd']
  hyps = ['a  b', 'e', None]  # Extra spaces do not matter: token equality.
  assert metrics.exact_match(refs, hyps) == pytest.approx(1 / 3)
  out = metrics.text_metrics(refs, hyps)
  assert set(out) == {'bleu4', 'edit_accuracy', 'exact_match'}
  assert out['edit_accuracy'] == pytest.approx(1 - 2 / 4)


def test_length_mismatch_raises():
  with pytest.raises(ValueError, match='1 references but 2 hypotheses'):
    metrics.corpus_bleu(['a'], ['a', 'b'])
