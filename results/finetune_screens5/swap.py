"""Writes MODEL's variables with the named top-level modules taken from BASE.

    python results/finetune_screens5/swap.py MODEL_DIR BASE_DIR OUT_DIR cell,key_proj

Both models must be the same network with the same vocabulary; every
collection (params, batch_stats) is swapped for the modules named.
"""

import sys

from flax.core import unfreeze

from im2latex_jax.infer import inference


def main(argv):
  model_dir, base_dir, out, names = argv[1:5]
  names = names.split(",")
  m, base = inference.load_model(model_dir), inference.load_model(base_dir)
  if m.vocab != base.vocab:
    sys.exit(f"{model_dir} and {base_dir} have different vocabularies; swap needs one")
  variables = unfreeze(m.variables)
  for col, tree in variables.items():
    for name in names:
      if name in tree:
        tree[name] = unfreeze(base.variables[col][name])
  missing = [n for n in names if n not in variables["params"]]
  if missing:
    sys.exit(f"no module {missing} in {model_dir}; top-level modules: {sorted(variables['params'])}")
  inference.write_exported(out, variables, m.config, m.vocab,
                           {"step": m.step, "model_id": f"{m.model_id}+{'+'.join(names)}-of-{base.model_id}"},
                           dtype="float32")
  print(f"{model_dir} with {base_dir}'s {names} -> {out}")


if __name__ == "__main__":
  main(sys.argv)
