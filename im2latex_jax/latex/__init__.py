"""LaTeX in and out: the normalizer (raw -> token form), the harvester (LaTeX
sources -> official layout) and the idiomatic writer (token form -> LaTeX a
person pastes)."""
