"""The TF-free path: shards exported from tf.data train where TensorFlow is absent.

The parent process (TensorFlow installed) exports the embedded data to numpy
shards and records what tf.data gives; a subprocess in which `import
tensorflow` raises reads the shards and must see the same step shapes (the
shared key schedule), the same evaluation batches and the same loss, and must
run `train_and_evaluate` from `config.input.loader='shards'`, decoding
evaluation included (the shards carry the formula strings).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from im2latex_jax.data import core
from im2latex_jax.data import input_pipeline
from im2latex_jax.data import shards

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 10

# Shared by parent and child: the loss of one train step from a fixed init.
STEP_CODE = '''
import jax, numpy as np
from im2latex_jax import optim
from im2latex_jax import state as state_lib
from im2latex_jax import steps as steps_lib
def step_loss(cfg, vocab_size, batch):
  model, tx, plateau = state_lib.build_model_and_optimizer(cfg, vocab_size)
  state = jax.jit(state_lib.make_init_fn(model, tx, plateau, cfg, (32, 128)))(jax.random.key(0))
  step = jax.jit(steps_lib.make_train_step(model, tx, optim.make_lr_schedule(cfg.optim),
                                       jax.random.key(1)))
  _, m = step(state, {k: np.asarray(v) for k, v in batch.items()})
  return float(m["loss_sum"]), float(m["tokens"])
'''

CHILD = '''
import json, os, sys, tempfile
sys.path[:0] = [os.environ["TESTS_DIR"], os.environ["CONFIGS_DIR"]]
try:
  import tensorflow
  raise SystemExit("tensorflow imported although blocked")
except ImportError:
  pass
import numpy as np
from conftest import tiny_config
from im2latex_jax.data import shards
from im2latex_jax import train
''' + STEP_CODE + '''
d = shards.load(os.environ["SHARDS"])
it = d.train_iterator(global_batch_size=8, seed=3)
shapes = [[*b["image"].shape[1:3], b["tokens"].shape[1]] for b in (next(it) for _ in range(%d))]
eval0 = next(iter(d.eval_batches("validation", global_batch_size=16, with_strings=True)))
eval0_formulas = [str(f) for f in eval0.pop("formula")]
eval0.pop("image_name")
cfg = tiny_config()
# The shards were exported with the quickstart grid (the embedded_data fixture).
cfg.input.buckets = 'im2markup'
cfg.input.token_buckets = (20, 40)
loss = step_loss(cfg, len(d.vocab), eval0)
with cfg.unlocked():
  cfg.input.loader = "shards"
  cfg.input.shards_dir = os.environ["SHARDS"]
cfg.num_train_steps = 2
cfg.log_every_steps = 1
cfg.eval_every_steps = 2
cfg.eval_max_examples = 16
cfg.evals.decode_every_steps = 2
cfg.evals.decode_max_examples = 16
cfg.evals.max_decode_len = 8
final = train.train_and_evaluate(cfg, tempfile.mkdtemp())
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets", "wandb"))
print("RESULT " + json.dumps({"shapes": shapes, "loss": loss, "eval_tokens": eval0["tokens"].tolist(),
                              "final_step": final["step"], "final_loss": final.get("loss"),
                              "eval_formulas": eval0_formulas,
                              "decode_examples": final.get("decode_examples"),
                              "bleu4": final.get("bleu4"),
                              "tf_modules": bad}))
''' % NUM_STEPS


def test_train_from_shards_without_tensorflow(embedded_data, tmp_path):
  cfg, data = embedded_data
  out = tmp_path / "shards"
  index = input_pipeline.export_shards(cfg.input, str(out))
  assert index["splits"]["train"]["counts"] == data.train_counts.tolist()

  # What tf.data gives on the same examples.
  it = input_pipeline.create_train_iterator(data, cfg.input, global_batch_size=8, seed=3)
  want_shapes = [[*b["image"].shape[1:3], b["tokens"].shape[1]]
                 for b in (next(it) for _ in range(NUM_STEPS))]
  ds, _, _ = input_pipeline.create_eval_dataset(data, cfg.input, "validation",
                                                global_batch_size=16, keep_strings=True)
  eval0 = next(ds.as_numpy_iterator())
  want_formulas = [f.decode() for f in eval0.pop("formula")]
  eval0.pop("image_name")
  ns = {}
  exec(STEP_CODE, ns)  # pylint: disable=exec-used
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  want_loss = ns["step_loss"](tiny_config(), len(data.vocab), eval0)

  blocker = tmp_path / "blocked"
  for name in ("tensorflow", "tensorflow_datasets", "wandb"):
    (blocker / name).mkdir(parents=True)
    (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=os.pathsep.join([str(blocker), str(REPO)]), JAX_PLATFORMS="cpu",
             SHARDS=str(out), TESTS_DIR=str(REPO / "tests"),
             CONFIGS_DIR=str(REPO / "configs"), WANDB_MODE="disabled")
  proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  got = json.loads(line[len("RESULT "):])
  assert got["tf_modules"] == []
  assert got["shapes"] == want_shapes
  np.testing.assert_array_equal(np.array(got["eval_tokens"]), eval0["tokens"])
  np.testing.assert_allclose(got["loss"], want_loss, rtol=1e-5)
  assert got["final_step"] == 2 and np.isfinite(got["final_loss"])
  # The formula strings travel with the shards (padding rows are ''), so the
  # decoding evaluator ran on the shards source.
  assert got["eval_formulas"] == want_formulas
  assert got["decode_examples"] == 16 and 0 <= got["bleu4"] <= 100


def test_key_schedule_is_a_function_of_seed_and_step():
  w = np.array([5.0, 1.0, 3.0])
  full = core.key_schedule(7, w, 0, 10_000)
  np.testing.assert_array_equal(core.key_schedule(7, w, 4_000, 500), full[4_000:4_500])
  assert not np.array_equal(core.key_schedule(8, w, 0, 10_000), full)
  np.testing.assert_allclose(np.bincount(full) / len(full), w / w.sum(), atol=0.02)
  np.testing.assert_array_equal(core.consumed_per_key(7, w, 9_000),
                                np.bincount(full[:9_000], minlength=3))


def test_shard_loader_resumes_exactly():
  import fake_bench  # pylint: disable=g-import-not-at-top
  cfg = fake_bench.get_config()
  cfg.input.fake.examples_per_key = 40
  d = shards.get_data(cfg.input)
  full = d.train_iterator(global_batch_size=16, seed=1)
  batches = [next(full) for _ in range(12)]
  resumed = d.train_iterator(global_batch_size=16, seed=1, start_step=7)
  for want in batches[7:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["tokens"], want["tokens"])
    np.testing.assert_array_equal(got["image"], want["image"])


def test_shards_cli_exports_then_trains(tfds_dir, tmp_path):
  """`im2latex-jax shards export` then `shards train` (the accelerator path),
  through the command line, with config overrides on both."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", WANDB_MODE="disabled", TFDS_DATA_DIR=str(tfds_dir))
  cfg = str(REPO / "configs" / "quickstart.py")
  out = tmp_path / "shards"

  def cli(*args):
    return subprocess.run([sys.executable, "-m", "im2latex_jax.main", "shards", *args],
                          capture_output=True, text=True, timeout=600, env=env, check=False)

  r = cli("export", "--config", cfg, "--out", str(out), "--max_examples", "400")
  assert r.returncode == 0, r.stderr[-3000:]
  index = json.loads((out / "index.json").read_text())
  assert index["format"] == shards.FORMAT_VERSION and set(index["splits"]) == {"train", "validation"}
  counts = index["splits"]["train"]["counts"]
  assert sum(counts) == 400 and f"train: {sum(counts[:-1])} examples" in r.stdout
  w = tmp_path / "w"
  r = cli("train", "--config", cfg, "--shards", str(out), "--workdir", str(w),
          "--config.num_train_steps=2", "--config.eval_every_steps=2",
          "--config.log_every_steps=1", "--config.input.batch_size=8")
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.loads((w / "config.json").read_text())
  assert saved["input"]["loader"] == "shards"
  assert saved["input"]["shards_dir"] == str(out)
  assert json.loads((w / "final_metrics.json").read_text())["step"] == 2
  assert cli("train", "--config", cfg, "--workdir", str(w)).returncode == 2  # no --shards
