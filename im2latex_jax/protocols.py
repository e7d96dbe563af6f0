"""Data protocols shared by the paper configs.

- 'official': the official release (download, or `manual_dir` with the official
  files): train on `train`, select on `validation`, report on `test`.
- 'reduced': the reduced-label protocol of this project's shared data
  (shared/data/README.md): only 3,000 official training formulas exist there,
  so train on `train + validation[:7475]` and select on `validation[7475:]`
  (1,000 examples). Never report it as the official split.
"""

import ml_collections

PROTOCOLS = ("official", "reduced")


def apply(config: ml_collections.ConfigDict, protocol: str | None) -> ml_collections.ConfigDict:
  protocol = protocol or "official"
  if protocol == "official":
    config.input.train_split = "train"
    config.input.vocab_split = "train"
    config.input.eval_split = "validation"
  elif protocol == "reduced":
    config.input.train_split = "train+validation[:7475]"
    config.input.vocab_split = "train+validation[:7475]"
    config.input.eval_split = "validation[7475:]"
  else:
    raise ValueError(f"Unknown protocol {protocol!r}; use one of {PROTOCOLS} "
                     "(e.g. --config configs/im2markup.py:reduced).")
  return config
