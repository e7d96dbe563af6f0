"""Token vocabulary, built from the training formulas as im2markup does.

im2markup keeps the training tokens seen more than once; everything else maps
to `<unk>`. The vocabulary of a run is written to `<workdir>/vocab.txt` and is
always read back from there (never rebuilt at prediction time), so a model and
its token ids can not drift apart.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
import os

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
VOCAB_FILENAME = "vocab.txt"


class Vocab:
  """A fixed mapping between formula tokens and integer ids."""

  def __init__(self, tokens: Sequence[str]):
    if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
      raise ValueError(
          f"A vocabulary must start with the special tokens {SPECIALS}, got "
          f"{tuple(tokens[:len(SPECIALS)])}; was this file written by "
          "Vocab.save?")
    if len(set(tokens)) != len(tokens):
      dup = [t for t, c in collections.Counter(tokens).items() if c > 1]
      raise ValueError(f"Duplicate tokens in vocabulary: {dup[:10]}")
    self.tokens = list(tokens)
    self._index = {t: i for i, t in enumerate(self.tokens)}

  @classmethod
  def build(cls, formulas: Iterable[str], min_count: int = 2) -> "Vocab":
    """Tokens seen at least `min_count` times, most frequent first."""
    counts = collections.Counter(
        tok for formula in formulas for tok in formula.split())
    kept = [t for t, c in counts.items() if c >= min_count and t not in SPECIALS]
    # Frequency first, then the token itself, so the order is deterministic.
    kept.sort(key=lambda t: (-counts[t], t))
    return cls(list(SPECIALS) + kept)

  def __len__(self) -> int:
    return len(self.tokens)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocab) and self.tokens == other.tokens

  def token_to_id(self, token: str) -> int:
    return self._index.get(token, UNK)

  def encode(self, formula: str) -> list[int]:
    """Space-tokenized formula -> ids (no BOS/EOS)."""
    return [self._index.get(t, UNK) for t in formula.split()]

  def decode_tokens(self, ids: Iterable[int]) -> list[str]:
    """Ids -> tokens, stopping at EOS and skipping PAD/BOS."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS:
        break
      if i in (PAD, BOS):
        continue
      out.append(self.tokens[i] if 0 <= i < len(self.tokens) else SPECIALS[UNK])
    return out

  def decode(self, ids: Iterable[int]) -> str:
    return " ".join(self.decode_tokens(ids))

  def save(self, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write("\n".join(self.tokens) + "\n")
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "Vocab":
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"No vocabulary at {path}. A workdir gets vocab.txt when training "
          "starts; pass the workdir of a training run.")
    with open(path, encoding="utf-8") as f:
      tokens = [line.rstrip("\n") for line in f]
    while tokens and tokens[-1] == "":
      tokens.pop()
    return cls(tokens)
