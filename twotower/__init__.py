"""twotower: the command line, its handlers, the demo and the benchmarks (the top layer)."""

from common import env as _env  # noqa: F401  (must run before TensorFlow is imported)

__version__ = "0.1.0"
