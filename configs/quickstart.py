"""Quickstart: a small im2markup model on the embedded data, 2 CPU cores.

  im2latex-jax train --config configs/quickstart.py --workdir /tmp/im2latex_quickstart

Shows learning in minutes on a CPU: the validation loss falls from 5.4
(uniform over the 228-token vocabulary) to ~2.7 (perplexity ~15, token
accuracy ~43 %) in 600 steps; the whole command (data preparation, compiles,
training, evaluations) took 1:56 on 2 idle cores and 3:36 on 2 busy ones.
More steps overfit the 720 embedded formulas.
"""

from im2latex_jax import defaults


def get_config(arg=None):
  del arg
  c = defaults.base_config()
  c.input.manual_dir = "embedded"
  c.input.cache = True
  c.input.token_buckets = (20, 40)
  c.input.batch_size = 16
  c.input.eval_batch_size = 32
  c.input.shuffle_buffer = 512

  c.model.cnn_features = (16, 32, 64, 64, 128, 128)
  c.model.encoder_hidden = 64
  c.model.max_rows = 16
  c.model.decoder_hidden = 128
  c.model.embed_dim = 32
  c.model.init = "conv_he"

  c.optim.name = "adam"
  c.optim.lr = 3e-3
  c.optim.clip = "global"
  c.optim.plateau.patience = 3

  c.num_train_steps = 600
  c.log_every_steps = 20
  c.eval_every_steps = 100
  c.evals.decode_every_steps = 0
  c.evals.max_decode_len = 42
  return c
