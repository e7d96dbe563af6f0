"""Bayesian (TPE) search over the quickstart config: lr, decoder size, clipping.

  im2latex-jax sweep --space configs/sweeps/quickstart_bayes.py --study qs_bayes \
      --workers 2 --trials 4

Each trial trains the quickstart model for 40 steps (~1 minute on 2 cores with
a warm compilation cache) and reports eval/loss at steps 20 and 40; the median
pruner stops trials whose eval/loss is worse than the median at the same step.
"""


def get_space():
  return dict(
      config="../quickstart.py",
      metric="eval/loss",
      direction="minimize",
      sampler="bayes",
      params={
          "optim.lr": dict(low=3e-4, high=1e-2, log=True),
          "model.decoder_hidden": [64, 128, 256],
          "optim.clip_norm": [1.0, 5.0],
      },
      fixed={
          "num_train_steps": 40,
          "eval_every_steps": 20,
          "log_every_steps": 10,
      },
      trials=8,
      pruner=dict(kind="median", n_startup_trials=2, n_warmup_steps=20),
      seed=0,
  )
