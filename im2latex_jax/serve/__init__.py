"""Serving: the web page and JSON API (`app`), upload decoding (`image_io`).

Importing this package imports neither Flask nor the model, so the predict CLI
can use `image_io` alone.
"""
