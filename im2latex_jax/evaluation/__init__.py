"""Evaluation: im2markup's text metrics (`metrics`) and rendered-image metrics
(`image_metrics`), decoding a split (`evaluators`), the `evaluate` command
(`evaluate`) and the screenshot benchmark (`robustness`)."""
