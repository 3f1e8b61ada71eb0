"""Sandboxes: isolated places where model-written commands and unit tests run."""
