r"""The recipe comparison of results/README.md, sized for 2 CPU cores.

One argument picks the recipe; each keeps its own optimizer, schedule, batch
size and initialisation (configs/{im2markup,seed,transformer,shipped}.py on
the reduced protocol), at a width that learns within minutes on a CPU, on the same
data and buckets, for a step count that costs about the same CPU time:

  im2markup     the paper's plain SGD (lr 0.1, per-tensor clip, batch 20)
  seed          the seed's momentum 0.9 + plateau on BLEU (batch 32)
  transformer   ResNet + 2-D sin-cos + Transformer decoder, AdamW + warmup
  shipped       the shipped model's Adam + warmup + plateau on the loss (batch 64)
  <name>+aug    the same with the robust online augmentation (defaults.robust_augment_config)

  im2latex-jax train --config configs/compare.py:seed+aug \
      --config.input.manual_dir=mixed --workdir workdirs/compare/seed+aug
  im2latex-jax evaluate --workdir workdirs/compare/seed+aug --split 'validation[7475:]'

`mixed` is the data of configs/shipped.py (the real reduced-protocol
formulas + generated ones, all 26,935 training lines). All recipes in turn,
then the table: `bash results/compare/run.sh mixed workdirs/compare` and
`python results/compare/table.py`.
"""

from im2latex_jax import defaults

RECIPES = ("im2markup", "seed", "transformer", "shipped")

# Steps per recipe for about the same CPU time (measured on 2 cores, see
# results/README.md): the batch size and the cost of a step differ.
STEPS = {"im2markup": 3000, "seed": 2000, "transformer": 1000, "shipped": 1000}


def get_config(arg=None):
  name, _, extra = (arg or "seed").partition("+")
  if name not in RECIPES or extra not in ("", "aug"):
    raise ValueError(f"Unknown comparison {arg!r}; use one of {RECIPES}, "
                     "optionally with '+aug' (e.g. configs/compare.py:seed+aug).")
  c = defaults.sibling_config(__file__, name, "reduced")

  # Same data shapes for every recipe: the shipped model's coarse buckets
  # (few shapes, so little compile time).
  c.input.buckets = "50x200,50x280,50x400,100x500,160x500"
  c.input.token_buckets = (40, 80, 150)
  if extra == "aug":
    c.input.augment = defaults.robust_augment_config()

  # CPU width: a quarter of the paper's convolution channels, half its RNNs.
  if name == "transformer":
    c.model.resnet_features = (16, 32, 64)
    c.model.d_model = 128
    c.model.num_heads = 4
    c.model.mlp_dim = 512
    c.model.encoder_layers = 1
    c.model.num_layers = 2
    c.optim.warmup_steps = 200  # the recipe's 2,000 would be the whole run
  else:
    c.model.cnn_features = (16, 32, 64, 64, 128, 128)
    c.model.encoder_hidden = 128
    c.model.decoder_hidden = 256
    c.model.embed_dim = 64

  if name == "shipped":
    c.optim.warmup_steps = 100  # the recipe's 500 would be half the run

  c.num_epochs = None
  c.num_train_steps = STEPS[name]
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.evals.decode_every_steps = 500 if c.optim.plateau.metric == "bleu4" else 0
  c.evals.decode_max_examples = 200
  return c
