"""Writes MODEL's parameters with BASE's BatchNorm statistics.

    python results/finetune_screens2/bn/swap_bn.py MODEL_DIR BASE_DIR OUT_DIR
"""

import sys

from flax.core import unfreeze

from im2latex_jax.infer import inference


def main(argv):
  model_dir, base_dir, out = argv[1:4]
  m, base = inference.load_model(model_dir), inference.load_model(base_dir)
  variables = {**unfreeze(m.variables), "batch_stats": base.variables["batch_stats"]}
  inference.write_exported(out, variables, m.config, m.vocab,
                           {"step": m.step, "model_id": f"{m.model_id}+bn-of-{base.model_id}"},
                           dtype="float32")
  print(f"{model_dir} with {base_dir}'s batch statistics -> {out}")


if __name__ == "__main__":
  main(sys.argv)
