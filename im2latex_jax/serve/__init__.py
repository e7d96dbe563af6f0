"""Serving: the web page and JSON API (`app`) and a stand-in predictor
(`fake`). Upload decoding is infer/image_io.py, shared with the predict CLI."""
