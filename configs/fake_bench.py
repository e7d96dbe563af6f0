"""The benchmark config: im2markup-size model on random numpy data (no TF).

  im2latex-jax bench --config configs/fake_bench.py --out bench.json
  # on a machine without TensorFlow (the GPU machines):
  python -m im2latex_jax.main bench --config configs/fake_bench.py --skip-torch

The full im2markup model (~9.4 M parameters with a 500-token vocabulary),
batch 32, the headline shape 50x200 images with 100 target tokens (+BOS/EOS:
tokens [32, 102]), plus a smaller 40x160 / 50-token key so per-bucket figures
and the no-recompile check see more than one shape. Figures: BENCHMARKS.md.
"""


from im2latex_jax import defaults


def get_config(arg=None):
  """arg: 'bf16' for bfloat16 compute."""
  c = defaults.base_config()
  c.input.loader = "fake"
  c.input.fake.examples_per_key = 256
  c.input.buckets = "40x160,50x200"
  c.input.token_buckets = (50, 100)
  c.input.batch_size = 32
  c.input.eval_batch_size = 32
  c.model.name = "im2markup"
  c.model.conv_impl = "auto"  # Winograd/im2col for training on CPU (BENCHMARKS.md)
  c.model.dtype = "bfloat16" if arg == "bf16" else "float32"
  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.clip = "per_tensor"
  c.num_train_steps = 20
  c.log_every_steps = 10
  c.eval_every_steps = 10_000
  c.evals.max_decode_len = 102
  c.wandb.mode = "disabled"
  return c
