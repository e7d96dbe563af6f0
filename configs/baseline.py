r"""The seed's first model: resize → CNN → GRU decoder with Bahdanau attention.

The TensorFlow image-captioning tutorial design the 2019 project started
from: every image resized to one size (64×256 here), a 4-layer CNN, a GRU
decoder reading `[context; embedding]` with additive attention, Adam.

  im2latex-jax train --config configs/baseline.py:reduced \
      --config.input.manual_dir=../shared/data/im2latex100k --workdir workdirs/baseline
"""

from im2latex_jax import defaults


def get_config(arg=None):
  c = defaults.base_config()
  c.input.manual_dir = None
  c.input.batch_size = 32
  c.input.eval_batch_size = 32
  defaults.apply_protocol(c, arg)

  c.model.name = "baseline"
  c.model.resize_hw = (64, 256)
  c.model.cnn_features = (64, 128, 256, 256)
  c.model.decoder_hidden = 512
  c.model.embed_dim = 256
  c.model.attention_dim = 512
  c.model.init = "default"

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.clip = "global"
  c.optim.plateau.patience = 2

  c.num_epochs = 15
  c.eval_every_steps = 2000
  return c
