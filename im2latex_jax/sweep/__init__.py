"""Hyperparameter sweeps: the search space files (`space`) and the Optuna
study with its trial workers, resume and summary (`study`, `im2latex-jax sweep`)."""
