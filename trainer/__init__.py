"""Two-tower trainer: dataset directory -> run directory (checkpoints, metrics, export)."""

from common import env as _env  # noqa: F401  (must run before TensorFlow is imported)
