"""What every package shares: environment set-up, settings, config and file contracts.

The bottom layer: it imports no other package of this project (docs/architecture.md).
"""

from common import env as _env  # noqa: F401  (must run before TensorFlow is imported)
