"""A simulated multi-stage recommender with known truth: a data source, not a Beam stage.

`twotower simulate` writes its logs in the input format of `twotower preprocess` and the
ground truth that `twotower evaluate` scores against (docs/simulator.md).
"""

from common import env as _env  # noqa: F401  (must run before TensorFlow is imported)
