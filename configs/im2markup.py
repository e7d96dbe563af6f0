r"""im2markup (Deng et al. 2017), the paper recipe.

CNN without FC layers → row BiLSTM (256 per direction, learned per-row initial
states) → LSTM decoder 512 with input feeding and Luong attention; ~9.4 M
parameters. Plain SGD lr 0.1 (no momentum), per-tensor gradient-norm clip 5,
uniform init U[-0.05, 0.05], batch 20, lr × 0.5 whenever the validation loss
rises, 15 epochs, im2markup's train/val filter, vocabulary = training tokens
seen more than once, beam 5 at test.

Official data (downloads it, or point --config.input.manual_dir at the files):

  im2latex-jax train --config configs/im2markup.py --workdir workdirs/im2markup
  im2latex-jax evaluate --workdir workdirs/im2markup --split test --beam 5 --image-metrics

Expected (paper, official test split): BLEU-4 87.73, image exact match 77.46
(79.88 -ws); a re-run of the released code reached BLEU 91.20, 82.1 / 84.7.

With this project's shared data (reduced-label protocol, see defaults.apply_protocol):

  im2latex-jax train --config configs/im2markup.py:reduced \
      --config.input.manual_dir=../shared/data/im2latex100k --workdir workdirs/im2markup_reduced

The argument after ':' picks the protocol ('official' by default).
"""

from im2latex_jax import defaults


def get_config(arg=None):
  c = defaults.base_config()
  c.input.manual_dir = None
  c.input.batch_size = 20
  c.input.eval_batch_size = 20
  c.input.token_buckets = (50, 100, 150)
  defaults.apply_protocol(c, arg)

  c.model.name = "im2markup"
  c.model.conv_impl = "auto"  # Winograd/im2col for training on CPU (BENCHMARKS.md)
  c.model.init = "uniform"
  c.model.init_scale = 0.05

  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.clip = "per_tensor"
  c.optim.clip_norm = 5.0
  c.optim.plateau.metric = "loss"
  c.optim.plateau.factor = 0.5
  c.optim.plateau.patience = 1

  c.num_epochs = 15
  c.eval_every_steps = 2000
  return c
