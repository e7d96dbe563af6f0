r"""The recipe of the model shipped with the package (im2latex_jax/assets/model).

im2markup's architecture (~9.5 M parameters), trained on the reduced-label
protocol (shared/data/README.md): the 3,000 official training formulas +
validation[:7475] + 23,935 formulas generated from them by
`im2latex-jax gen-formulas` and rendered by `im2latex-jax render`, merged with
`im2latex-jax merge-data`; model selection on validation[7475:] (1,000).
Adam with a short warmup and reduce-on-plateau on the validation loss, batch
64, five coarse image buckets (few shapes, so little compile time on an
accelerator). The full provenance is in im2latex_jax/assets/model/MODEL_CARD.md.

  im2latex-jax gen-formulas --formulas $D/im2latex_formulas.norm.lst \
      --split-list $D/im2latex_train_filter.lst --split-list val_first7475.lst \
      --n 24000 --out new.lst
  im2latex-jax render --formulas new.lst --out generated --split train
  im2latex-jax merge-data --out mixed --add $D --add generated:train
  # The shipped run kept the first 19,500 training lines (3,000 real + 16,500
  # generated) so that the exported shards fit a 64 MiB transfer:
  #   head -19500 mixed/im2latex_train_filter.lst > t && mv t mixed/im2latex_train_filter.lst
  im2latex-jax train --config configs/shipped.py --workdir workdirs/shipped \
      --config.input.manual_dir=mixed
  # or, on an accelerator without TensorFlow (how the shipped model was made):
  im2latex-jax shards export --config configs/shipped.py --config.input.manual_dir=mixed --out shards
  im2latex-jax shards train --config configs/shipped.py --shards shards \
      --workdir workdirs/shipped --config.precompile_workers=14
  im2latex-jax export-model --workdir workdirs/shipped --out model_dir

Holdout (validation[7475:], 1,000): greedy BLEU-4 84.09, beam 5 84.15;
image exact match 54.1 / 54.9 (README, results/).
"""

from im2latex_jax import defaults


def get_config(arg=None):
  c = defaults.base_config()
  c.input.manual_dir = None
  defaults.apply_protocol(c, arg or "reduced")
  c.input.buckets = "50x200,50x280,50x400,100x500,160x500"
  c.input.token_buckets = (40, 80, 150)
  c.input.batch_size = 64
  c.input.eval_batch_size = 64

  c.model.name = "im2markup"
  c.model.init = "conv_he"
  c.model.conv_impl = "auto"  # Winograd/im2col for training on CPU, cuDNN's on GPU

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 500
  c.optim.clip = "global"
  c.optim.clip_norm = 5.0
  c.optim.plateau.metric = "loss"
  c.optim.plateau.factor = 0.5
  c.optim.plateau.patience = 2

  c.num_train_steps = 40_000
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  return c
