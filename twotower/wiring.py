"""Where the top wires the middle packages together (they never import each other).

The trainer's export writes, and its evaluation can search, an item index whose format
belongs to the serving side; the trainer takes the builder as an argument and these
functions hand it the serving implementation.
"""

from serving.index_config import IndexConfig
from serving.index_io import IndexBuilder


def scann_builder() -> IndexBuilder:
    """The ScaNN index that `evaluation.scann` retrieves through (`two_tower_scann`)."""
    return IndexBuilder(IndexConfig(kind="scann"))


def export_builder(config: IndexConfig | None = None) -> IndexBuilder:
    """The item index an export writes (`IndexConfig()`: exact below 20k items, ScaNN above)."""
    return IndexBuilder(config or IndexConfig())
