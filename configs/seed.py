r"""The seed project's variant of im2markup (TensorFlow 2, 2019).

Same architecture as configs/im2markup.py; SGD *with momentum*, batch 32, the
learning rate lowered on the validation score (BLEU of greedy decoding) after
each evaluation, and a special initialisation of the conv layers only (He
normal; Flax defaults elsewhere).

  im2latex-jax train --config configs/seed.py:reduced \
      --config.input.manual_dir=../shared/data/im2latex100k --workdir workdirs/seed
"""

from im2latex_jax import defaults


def get_config(arg=None):
  c = defaults.base_config()
  c.input.manual_dir = None
  c.input.batch_size = 32
  c.input.eval_batch_size = 32
  defaults.apply_protocol(c, arg)

  c.model.name = "im2markup"
  c.model.init = "conv_he"

  c.optim.name = "momentum"
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.clip = "global"
  c.optim.clip_norm = 5.0
  c.optim.plateau.metric = "bleu4"
  c.optim.plateau.factor = 0.5
  c.optim.plateau.patience = 1

  c.num_epochs = 15
  c.eval_every_steps = 2000
  c.evals.decode_every_steps = 2000
  c.evals.decode_max_examples = 1000
  return c
