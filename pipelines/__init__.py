"""Beam pipelines: request logs -> dataset directory (TFRecord shards + manifest)."""

from twotower import env as _env  # noqa: F401  (must run before TensorFlow is imported)
