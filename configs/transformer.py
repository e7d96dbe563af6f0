r"""ResNet encoder + 2-D positional encoding + Transformer decoder.

The seed project's future work, in the form newer im2latex projects use: a
small ResNet (3 stages of 2 residual blocks, 64/128/256 channels, H and W
reduced by 8 as in im2markup), a 2-D sinusoidal encoding (rows in half the
channels, columns in the other half), 2 Transformer encoder layers and a 3-layer
pre-LN Transformer decoder (d_model 256, 4 heads, MLP 1024, tied output
embedding, dropout 0.1); 7.7 M parameters for a 500-token vocabulary. AdamW
(weight decay 0.01) at 3e-4 after 2,000 steps of linear warmup, global
gradient-norm clip 1, lr × 0.5 when the validation BLEU stops improving.
Default Flax initialisers (the 'uniform' scheme would scramble LayerNorm).

  im2latex-jax train --config configs/transformer.py:reduced \
      --config.input.manual_dir=../shared/data/im2latex100k --workdir workdirs/transformer
  im2latex-jax evaluate --workdir workdirs/transformer --split test --beam 5

Not trained to convergence here; at CPU width and ~20 minutes it learns a
little more slowly than the shipped Adam recipe (results/README.md).
The argument after ':' picks the data protocol ('official' by default).
"""

from im2latex_jax import defaults


def get_config(arg=None):
  c = defaults.base_config()
  c.input.manual_dir = None
  c.input.batch_size = 32
  c.input.eval_batch_size = 32
  c.input.token_buckets = (50, 100, 150)
  defaults.apply_protocol(c, arg)

  c.model.name = "transformer"
  c.model.init = "default"
  # Sizes are the defaults (defaults.py: ResNet 64/128/256 × 2 blocks, d_model
  # 256, 4 heads, MLP 1024, 2 encoder + 3 decoder layers, max_len 160 =
  # longest token bucket + BOS/EOS and >= evals.max_decode_len).
  c.model.dropout = 0.1

  c.optim.name = "adamw"
  c.optim.lr = 3e-4
  c.optim.weight_decay = 0.01
  c.optim.warmup_steps = 2000
  c.optim.clip = "global"
  c.optim.clip_norm = 1.0
  c.optim.plateau.metric = "bleu4"
  c.optim.plateau.factor = 0.5
  c.optim.plateau.patience = 2

  c.num_epochs = 30
  c.eval_every_steps = 2000
  c.evals.decode_every_steps = 2000
  c.evals.decode_max_examples = 1000
  c.evals.max_decode_len = 152
  return c
