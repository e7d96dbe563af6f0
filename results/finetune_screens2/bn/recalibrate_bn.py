"""Re-estimates a model's BatchNorm running statistics on the real training images.

    python results/finetune_screens2/bn/recalibrate_bn.py MODEL_DIR DATA_DIR OUT_DIR [BATCHES=80]

MODEL_DIR: an exported model (or training workdir); DATA_DIR: the official
layout (e.g. ../shared/data/im2latex100k), whose train split is read without
augmentation, 32 images a batch, through the CNN in training mode (momentum
0.9, so the last ~10 batches dominate). Writes the model with the new
statistics (float32) to OUT_DIR; the parameters are unchanged.
"""

import sys
import time

import jax
import jax.numpy as jnp
from flax.core import unfreeze

from im2latex_jax.data import sources
from im2latex_jax.infer import inference


def main(argv):
  src, manual, out = argv[1:4]
  batches = int(argv[4]) if len(argv) > 4 else 80
  m = inference.load_model(src)
  cfg = m.config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.input.manual_dir = manual
    cfg.input.augment.enabled = False
  it = sources.get_data(cfg.input, vocab=m.vocab).train_iterator(global_batch_size=32, seed=123)

  @jax.jit
  def update(variables, image, hw):
    _, new = m.model.apply(variables, image, hw, train=True, mutable=["batch_stats"],
                           method=lambda mod, i, h, train: mod.encode(i, h, train))
    return {**variables, "batch_stats": new["batch_stats"]}

  variables, t = dict(unfreeze(m.variables)), time.time()
  for _ in range(batches):
    b = next(it)
    variables = update(variables, jnp.asarray(b["image"]), jnp.asarray(b["image_hw"]))
  print(f"{batches} batches in {time.time() - t:.0f} s -> {out}")
  inference.write_exported(out, variables, m.config, m.vocab,
                           {"step": m.step, "model_id": m.model_id + "+bn-real"}, dtype="float32")


if __name__ == "__main__":
  main(sys.argv)
