"""Beam pipelines: request logs -> dataset directory (TFRecord shards + manifest)."""

from common import env as _env  # noqa: F401  (must run before TensorFlow is imported)
