"""Hyperparameter sweeps (`im2latex-jax sweep`): search space files (`space`),
the Optuna study and its stale-trial recovery (`study`), one trial's training
subprocess and the worker loop (`trials`), the summary table and plots
(`summary`), and the command (`cli`)."""
