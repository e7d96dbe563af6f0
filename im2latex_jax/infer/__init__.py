"""Inference: greedy and beam search (`decode`), a trained model from its
directory and jitted decoding (`inference`), any user image onto the model's
canvas (`preprocess`), the batched prediction API (`predictor`) and the
`predict` command (`predict_cli`)."""
