"""Recovers the fine-tuned weights behind a WiSE-FT blend.

v2 = a * tuned + (1 - a) * base (`export-model --blend`), so
tuned = (v2 - (1 - a) * base) / a. The v2 file is bfloat16, so the result
carries that rounding divided by a (~0.5 % of a weight for a = 0.4): good
enough to continue training from, not a bit-exact copy of the run.

  python results/finetune_screens3/unblend.py BLEND_DIR BASE_DIR OUT_DIR
"""

import sys

from im2latex_jax import checkpointing
from im2latex_jax.infer import inference


def main(argv):
  blend_dir, base_dir, out = argv[1:4]
  blend, base = inference.load_model(blend_dir), inference.load_model(base_dir)
  meta = checkpointing.read_exported(blend_dir)[1]
  a = float(meta["blend"]["alpha"])
  try:
    inference.check_blendable(blend, base)
  except ValueError as e:
    sys.exit(f"error: {e}")
  # tuned = (blend - (1 - a) * base) / a: the lerp at 1 / a (> 1, extrapolating).
  tuned = inference.lerp_variables(blend.variables, base.variables, 1.0 / a)
  inference.write_exported(out, tuned, blend.config, blend.vocab,
                           {"step": blend.step, "model_id": meta["blend"]["tuned"] + "~unblended"},
                           dtype="float32")
  print(f"{meta['blend']['tuned']} recovered from {blend_dir} (alpha {a}) -> {out}")


if __name__ == "__main__":
  main(sys.argv)
