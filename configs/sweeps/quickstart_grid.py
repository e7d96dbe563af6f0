"""A 2×2 grid over the quickstart config: learning rate × decoder size.

  im2latex-jax sweep --space configs/sweeps/quickstart_grid.py --study qs_grid --workers 2

Runs exactly the 4 combinations, 40 training steps each, eval/loss at 20 and 40.
"""


def get_space():
  return dict(
      config="../quickstart.py",
      metric="eval/loss",
      direction="minimize",
      sampler="grid",
      params={
          "optim.lr": [1e-3, 3e-3],
          "model.decoder_hidden": [64, 128],
      },
      fixed={
          "num_train_steps": 40,
          "eval_every_steps": 20,
          "log_every_steps": 10,
      },
      pruner=dict(kind="none"),
  )
