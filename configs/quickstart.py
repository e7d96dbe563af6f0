"""Quickstart: a small im2markup model on the embedded data, 2 CPU cores.

  im2latex-jax train --config configs/quickstart.py --workdir /tmp/im2latex_quickstart

Shows learning in minutes on a laptop-class CPU: validation loss falls from
~5 (uniform over the vocabulary) to well below 3 within ~8 minutes on 2 cores.
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
