"""twotower: a debiased two-tower retrieval trainer (entry point, config, command line)."""

from twotower import env as _env  # noqa: F401  (must run before TensorFlow is imported)

__version__ = "0.1.0"
