"""Data generation for screenshots: renderers (`engines`), looks (`presentation`), the `render-screens` CLI (`screens`)."""
