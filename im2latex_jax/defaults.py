"""The config schema: every field with its default and unit, and its helpers.

Every file in configs/ starts from `base_config()` and changes what its recipe
needs, so every run's config has the same keys (a typo in a CLI override or in
a sweep fails loudly against the locked config). Also here: the augmentation
fields and their screenshot preset (`augment_config`, `robust_augment_config`),
the data protocols (`apply_protocol`), `check_config`, and importing a config
file by path.
"""

import importlib.util
import os
import types

import ml_collections
from ml_collections.config_dict import placeholder


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Base seed: parameters, data order and dropout all derive from it.
  c.seed = 0

  c.input = ml_collections.ConfigDict()
  # Source: None downloads the official release; a path is a manual dir in the
  # official layout; 'embedded' is the small set shipped in the package.
  c.input.manual_dir = placeholder(str)
  c.input.manual_dir = "embedded"
  # Where TFDS prepares the data (None: ~/tensorflow_datasets/…, per source).
  c.input.data_dir = placeholder(str)
  c.input.train_split = "train"
  c.input.eval_split = "validation"
  # Vocabulary: tokens of this split seen at least vocab_min_count times.
  c.input.vocab_split = "train"
  c.input.vocab_min_count = 2
  # (H, W) image buckets: 'im2markup' or 'HxW,HxW,…'.
  c.input.buckets = "im2markup"
  # Target-length buckets, in tokens (without BOS/EOS).
  c.input.token_buckets = (50, 100, 150)
  # Global batch size (over all devices and hosts), in examples.
  c.input.batch_size = 20
  c.input.eval_batch_size = 32
  c.input.shuffle_buffer = 1024
  c.input.prefetch = 2
  # Keep the raw (encoded) training records in memory.
  c.input.cache = False
  # im2markup's train/val filter; the test split is evaluated unfiltered.
  c.input.filter = ml_collections.ConfigDict(
      dict(enabled=True, max_height=160, max_width=500, max_tokens=150))
  c.input.eval_filter = ml_collections.ConfigDict(
      dict(enabled=True, max_height=160, max_width=500, max_tokens=150))
  # 'tfds' (tf.data over the TFDS builder), 'shards' (TF-free numpy shards
  # written by `im2latex-jax shards export`, read from shards_dir) or 'fake'.
  c.input.loader = "tfds"
  c.input.shards_dir = placeholder(str)
  # loader='fake': random formula-like data, per bucket key.
  c.input.fake = ml_collections.ConfigDict(dict(examples_per_key=256, vocab_size=500))
  # Online augmentation (im2latex_jax/data/augment.py); off in the paper configs.
  c.input.augment = augment_config()

  c.model = ml_collections.ConfigDict()
  # 'im2markup', 'baseline' or 'transformer'.
  c.model.name = "im2markup"
  # CNN channels of the six im2markup conv layers.
  c.model.cnn_features = (64, 128, 256, 256, 512, 512)
  # How the im2markup CNN's 3x3 convolutions run (same parameters, same
  # function): 'xla' (lax.conv_general_dilated; cuDNN on GPU), 'im2col' (one
  # matmul per conv: the full-size CNN's gradient ~2x faster on XLA:CPU),
  # 'winograd' (F(2x2, 3x3) for the layers of >= 128 input channels, im2col
  # below: ~20 % faster again), or 'auto' = winograd when training on CPU,
  # xla otherwise (inference, GPU/TPU).
  # The full-size configs use 'auto'; on the small quickstart CNN im2col was
  # not faster (BENCHMARKS.md).
  c.model.conv_impl = "xla"
  # Row BiLSTM hidden size per direction.
  c.model.encoder_hidden = 256
  # Rows with a learned initial state (feature-map rows; larger rows share the last).
  c.model.max_rows = 100
  c.model.decoder_hidden = 512
  c.model.embed_dim = 80
  # Dropout before the output projection (im2markup: 0); the transformer
  # applies it to every residual branch, the embeddings and the MLP hidden layer.
  c.model.dropout = 0.0
  # 'uniform' (im2markup: U[-init_scale, init_scale] everywhere),
  # 'conv_he' (the seed: He-normal conv kernels, Flax defaults elsewhere) or 'default'.
  c.model.init = "uniform"
  c.model.init_scale = 0.05
  # Baseline only: images are resized to this (H, W).
  c.model.resize_hw = (64, 256)
  c.model.attention_dim = 256
  # Transformer only (models/transformer.py). ResNet channels of the 3 stages
  # (each stage starts with a 2×2 max pool: H, W reduced by 8).
  c.model.resnet_features = (64, 128, 256)
  # Residual blocks (two 3×3 convs each) per stage.
  c.model.resnet_blocks = (2, 2, 2)
  # Model width (channels of memory, embeddings and attention), in features.
  c.model.d_model = 256
  # Attention heads per layer (d_model must be divisible by it).
  c.model.num_heads = 4
  # Hidden units of each Transformer MLP.
  c.model.mlp_dim = 1024
  # Transformer encoder layers over the feature cells (0: ResNet + 2-D encoding only).
  c.model.encoder_layers = 2
  # Transformer decoder layers.
  c.model.num_layers = 3
  # Decoder positions (and KV-cache length), in tokens; must be >= the longest
  # token bucket + 1 and >= config.evals.max_decode_len.
  c.model.max_len = 160
  # Decoder token positions: 'sinusoidal' or 'learned'.
  c.model.pos_embedding = "sinusoidal"
  # Share the token embedding with the output projection.
  c.model.tie_embeddings = True
  # Computation dtype ('float32' or 'bfloat16'); parameters stay float32.
  c.model.dtype = "float32"

  c.optim = ml_collections.ConfigDict()
  # 'sgd', 'momentum', 'nesterov', 'adam' or 'adamw'.
  c.optim.name = "momentum"
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 0.0
  # Linear warmup, in steps.
  c.optim.warmup_steps = 0
  # After warmup: 'none' (constant, the plateau lowers it) or 'cosine' (down to
  # lr * end_lr_factor at the last training step; the plateau still applies).
  c.optim.decay = "none"
  c.optim.end_lr_factor = 0.0
  # 'global', 'per_tensor' (im2markup) or 'none'; max gradient norm.
  c.optim.clip = "global"
  c.optim.clip_norm = 5.0
  # Parameters not to train: comma-separated module paths ('cell,key_proj' =
  # the decoder of im2markup, 'cnn/conv0'). They keep their values (zero
  # update, no optimizer state); BatchNorm statistics still follow the data.
  c.optim.frozen = ""
  c.optim.plateau = ml_collections.ConfigDict()
  # Metric that drives the plateau schedule and the best checkpoint:
  # 'loss' (validation loss, minimised) or a decoding metric such as 'bleu4'.
  c.optim.plateau.metric = "loss"
  c.optim.plateau.factor = 0.5
  # The lr is multiplied by factor after this many evaluations in a row
  # without improvement (1: at the first one, as im2markup does).
  c.optim.plateau.patience = 1
  c.optim.plateau.cooldown = 0
  # Relative improvement that counts as better (optax needs rtol or atol > 0).
  c.optim.plateau.rtol = 1e-4
  c.optim.plateau.min_scale = 1e-4

  # Training length: epochs (of the filtered training split) or steps; steps wins if > 0.
  c.num_epochs = 15
  c.num_train_steps = -1
  c.log_every_steps = 50
  # Compile the steps of every bucket shape up front with this many threads
  # (0: compile each shape when it first comes); pays off on many-core hosts.
  c.precompile_workers = 0
  # Evaluation (validation loss/perplexity) and checkpoint cadence, in steps.
  c.eval_every_steps = 1000
  # Evaluate at most this many examples per evaluation (None: all).
  c.eval_max_examples = placeholder(int)

  c.evals = ml_collections.ConfigDict()
  # Decoding evaluator during training (greedy): cadence in steps (0: off).
  c.evals.decode_every_steps = 0
  c.evals.decode_max_examples = 200
  c.evals.max_decode_len = 152
  c.evals.length_penalty = 0.0
  # Greedy decoding: added to EOS's log-probability when choosing the next
  # token (< 0: end a formula only when EOS wins by that margin); for a model
  # that stops early. Used by evaluate, predict and serve; 0: plain argmax.
  c.evals.eos_bias = 0.0

  # Fine-tuning: start from the parameters (and batch statistics) of this
  # model, an exported model dir or a training workdir (its best checkpoint),
  # with a fresh optimizer. The run then uses that model's vocabulary (formula
  # tokens it lacks become <unk>); config.model must describe the same network.
  # Ignored once the run's workdir has a checkpoint of its own (resume wins).
  c.init_from = placeholder(str)

  c.ckpt = ml_collections.ConfigDict()
  # Also keep the best checkpoint by config.optim.plateau.metric.
  c.ckpt.keep_best = True

  c.wandb = ml_collections.ConfigDict()
  # 'auto' (online if WANDB_API_KEY is set, else offline), 'online', 'offline', 'disabled'.
  c.wandb.mode = "auto"
  c.wandb.project = "im2latex-jax"
  c.wandb.entity = placeholder(str)
  c.wandb.group = placeholder(str)
  c.wandb.name = placeholder(str)
  return c


def augment_config() -> ml_collections.ConfigDict:
  """`config.input.augment`: every augmentation field, every transform off.

  The ops are in data/augment.py; `enabled` switches the whole
  augmentation in the input pipeline."""
  c = ml_collections.ConfigDict()
  # Master switch: the input pipeline augments training images only if set.
  c.enabled = False
  c.geometry = ml_collections.ConfigDict()
  c.geometry.enabled = False
  # Chance of applying the geometric transform to one example.
  c.geometry.prob = 1.0
  # Max relative scale change: the factor is uniform in [1 - s, 1 + s]; it is
  # lowered when the scaled formula would not fit in the canvas.
  c.geometry.scale = 0.0
  # Max rotation, degrees, uniform in [-r, r].
  c.geometry.rotate_deg = 0.0
  # Max translation of the formula, px, uniform in [-t, t] per axis, then
  # clipped so the ink stays `margin` px away from the canvas border.
  c.geometry.translate_px = 0
  # Min distance between the ink and the canvas border, px (the dataset's is 4).
  c.geometry.margin = 2

  c.blur = ml_collections.ConfigDict()
  c.blur.enabled = False
  c.blur.prob = 0.5
  # Gaussian blur sigma, px, uniform in [0, sigma_max] (kernel: 7 taps).
  c.blur.sigma_max = 0.0

  c.binarize = ml_collections.ConfigDict()
  c.binarize.enabled = False
  c.binarize.prob = 0.2
  # Threshold on the 0..255 scale, uniform in [low, high].
  c.binarize.threshold_low = 100
  c.binarize.threshold_high = 180

  c.background = ml_collections.ConfigDict()
  c.background.enabled = False
  c.background.prob = 0.5
  # Background (paper) gray level, uniform in [min_level, 255].
  c.background.min_level = 255
  # Ink gray level, uniform in [0, max_ink_level].
  c.background.max_ink_level = 0

  c.noise = ml_collections.ConfigDict()
  c.noise.enabled = False
  c.noise.prob = 0.5
  # Gaussian noise std on the 0..255 scale, uniform in [0, std_max].
  c.noise.std_max = 0.0

  c.jpeg = ml_collections.ConfigDict()
  c.jpeg.enabled = False
  c.jpeg.prob = 0.3
  # JPEG quality, uniform integer in [min_quality, max_quality].
  c.jpeg.min_quality = 30
  c.jpeg.max_quality = 95
  return c


def robust_augment_config() -> ml_collections.ConfigDict:
  """The augmentation preset for models that must read screenshots, photos
  and scans (configs/robust.py)."""
  c = augment_config()
  c.enabled = True
  c.geometry.enabled = True
  c.geometry.scale = 0.15
  c.geometry.rotate_deg = 1.5
  c.geometry.translate_px = 16
  c.blur.enabled = True
  c.blur.sigma_max = 0.8
  c.binarize.enabled = True
  c.background.enabled = True
  c.background.min_level = 190
  c.background.max_ink_level = 70
  c.noise.enabled = True
  c.noise.std_max = 12.0
  c.jpeg.enabled = True
  return c


# Data protocols shared by the paper configs (`apply_protocol`):
# - 'official': the official release (download, or `manual_dir` with the official
#   files): train on `train`, select on `validation`, report on `test`.
# - 'reduced': the reduced-label protocol of this project's shared data
#   (shared/data/README.md): only 3,000 official training formulas exist there,
#   so train on `train + validation[:7475]` and select on `validation[7475:]`
#   (1,000 examples). Never report it as the official split.
PROTOCOLS = ("official", "reduced")


def apply_protocol(config: ml_collections.ConfigDict,
                   protocol: str | None) -> ml_collections.ConfigDict:
  """Sets the train/vocabulary/eval splits of `protocol` (default 'official')."""
  protocol = protocol or "official"
  if protocol == "official":
    config.input.train_split = "train"
    config.input.vocab_split = "train"
    config.input.eval_split = "validation"
  elif protocol == "reduced":
    config.input.train_split = "train+validation[:7475]"
    config.input.vocab_split = "train+validation[:7475]"
    config.input.eval_split = "validation[7475:]"
  else:
    raise ValueError(f"Unknown protocol {protocol!r}; use one of {PROTOCOLS} "
                     "(e.g. --config configs/im2markup.py:reduced).")
  return config


# The repository checkout this package runs from (source tree or editable
# install). In an installed wheel this is site-packages, without configs/.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What a caller says when repo_file finds nothing: "<relpath> " + this.
NOT_IN_PACKAGE = "is not found (it ships with the repository, not the package; run from a checkout)"


def repo_file(relpath: str) -> str | None:
  """A file of the repository outside the package (configs/, benchmarks/).

  Looked for under the current directory, then in the checkout this package
  runs from; None where neither has it (an installed wheel used outside a
  checkout): the caller says what it skips or which flag gives the file
  (with NOT_IN_PACKAGE).
  """
  for root in (os.getcwd(), CHECKOUT):
    path = os.path.join(root, relpath)
    if os.path.isfile(path):
      return path
  return None


def import_file(path: str, name: str | None = None) -> types.ModuleType:
  """Imports a Python file by path (config files, benchmark scripts)."""
  name = name or "_im2latex_file_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling_config(config_file: str, name: str, arg=None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of configs/<name>.py, next to `config_file`."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  return import_file(path, f"im2latex_configs_{name}").get_config(arg)


# Config keys whose value must be positive (`check_config`).
_POSITIVE = ("optim.lr", "input.batch_size", "input.eval_batch_size",
             "log_every_steps", "eval_every_steps")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key of a value no run can use.

  Learning rate, batch sizes and logging/evaluation cadences must be
  positive; `num_train_steps` is -1 (use `num_epochs`) or positive, and so is
  `num_epochs` when it decides the length.
  """
  def get(key):
    node = config
    for part in key.split("."):
      node = node[part]
    return node

  for key in _POSITIVE:
    v = get(key)
    if v is None or not v > 0:
      raise ValueError(f"config.{key}={v!r} must be positive; set "
                       f"--config.{key} to a value > 0")
  steps = config.num_train_steps
  if not (steps == -1 or steps > 0):
    raise ValueError(f"config.num_train_steps={steps!r} must be -1 (train for "
                     "config.num_epochs) or positive")
  if steps == -1 and not config.num_epochs > 0:
    raise ValueError(f"config.num_epochs={config.num_epochs!r} must be positive "
                     "when config.num_train_steps is -1")
