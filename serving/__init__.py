"""Serving: loads an export directory and retrieves top-K items for a user."""

from twotower import env as _env  # noqa: F401  (must run before TensorFlow is imported)
