"""Text metrics of im2markup's evaluation (`scripts/evaluation`), on token strings.

Formulas are space-separated token strings. A missing prediction (None) counts
as the empty prediction, as im2markup does for an image that got no output.

- `corpus_bleu`: BLEU-4 as Moses `multi-bleu.perl` computes it (which is what
  im2markup's `evaluate_bleu.sh` calls): clipped n-gram precisions summed over
  the corpus, no smoothing (any zero precision gives 0), one brevity penalty
  from the corpus lengths. Written out rather than delegated to sacrebleu so
  that the rule is visible; the tests check both agree.
- `edit_accuracy`: `1 - Σ lev(tokens) / Σ max(len_gold, len_pred)`.
- `exact_match`: fraction of token sequences equal.
"""

from __future__ import annotations

import collections
import math
from typing import Optional, Sequence

from rapidfuzz.distance import Levenshtein

Hypotheses = Sequence[Optional[str]]

# BLEU-4: n-grams of order 1..MAX_ORDER.
MAX_ORDER = 4


def _tokens(formula: str | None) -> list[str]:
  return formula.split() if formula else []


def _check_lengths(references: Sequence[str], hypotheses: Hypotheses) -> None:
  if len(references) != len(hypotheses):
    raise ValueError(
        f'{len(references)} references but {len(hypotheses)} hypotheses; pass '
        'one hypothesis per reference (None for a missing prediction).')


def _ngrams(tokens: list[str], n: int) -> collections.Counter:
  return collections.Counter(
      tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(references: Sequence[str], hypotheses: Hypotheses) -> float:
  """Corpus BLEU-4 in [0, 100], as Moses multi-bleu.perl (single reference).

  Args:
    references: gold formulas, space-separated tokens.
    hypotheses: predictions, one per reference; None counts as empty.

  Returns:
    BLEU * 100; 0 when a precision is 0 or the predictions are all empty.
  """
  _check_lengths(references, hypotheses)
  correct = [0] * MAX_ORDER
  total = [0] * MAX_ORDER
  ref_len = hyp_len = 0
  for ref, hyp in zip(references, hypotheses):
    ref_toks, hyp_toks = _tokens(ref), _tokens(hyp)
    ref_len += len(ref_toks)
    hyp_len += len(hyp_toks)
    for n in range(1, MAX_ORDER + 1):
      hyp_ngrams = _ngrams(hyp_toks, n)
      ref_ngrams = _ngrams(ref_toks, n)
      total[n - 1] += sum(hyp_ngrams.values())
      correct[n - 1] += sum(min(c, ref_ngrams[g]) for g, c in hyp_ngrams.items())
  if ref_len == 0 or hyp_len == 0 or min(correct) == 0:
    # multi-bleu.perl takes log(0) as -9999999999, i.e. BLEU = 0.
    return 0.0
  log_precision = sum(math.log(c / t) for c, t in zip(correct, total)) / MAX_ORDER
  brevity_penalty = min(0.0, 1.0 - ref_len / hyp_len)  # exp(1 - r/c) if c < r.
  return 100.0 * math.exp(brevity_penalty + log_precision)


def edit_distances(references: Sequence[str],
                   hypotheses: Hypotheses) -> tuple[int, int]:
  """(Σ token Levenshtein distance, Σ max(len_gold, len_pred))."""
  _check_lengths(references, hypotheses)
  dist = denom = 0
  for ref, hyp in zip(references, hypotheses):
    ref_toks, hyp_toks = _tokens(ref), _tokens(hyp)
    dist += Levenshtein.distance(ref_toks, hyp_toks)
    denom += max(len(ref_toks), len(hyp_toks))
  return dist, denom


def edit_accuracy(references: Sequence[str], hypotheses: Hypotheses) -> float:
  """`1 - Σ lev(tokens) / Σ max(len_gold, len_pred)` in [0, 1].

  1.0 when every reference and prediction is empty.
  """
  dist, denom = edit_distances(references, hypotheses)
  return 1.0 - dist / denom if denom else 1.0


def exact_match(references: Sequence[str], hypotheses: Hypotheses) -> float:
  """Fraction of predictions whose token sequence equals the reference."""
  _check_lengths(references, hypotheses)
  if not references:
    return 0.0
  hits = sum(_tokens(r) == _tokens(h) for r, h in zip(references, hypotheses))
  return hits / len(references)


def text_metrics(references: Sequence[str], hypotheses: Hypotheses) -> dict:
  """{'bleu4' (0..100), 'edit_accuracy' (0..1), 'exact_match' (0..1)}."""
  return {
      'bleu4': corpus_bleu(references, hypotheses),
      'edit_accuracy': edit_accuracy(references, hypotheses),
      'exact_match': exact_match(references, hypotheses),
  }
