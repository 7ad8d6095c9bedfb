"""Building, saving and loading an item index of whichever kind.

`build_index` resolves an `IndexConfig` for the corpus and builds a brute-force or ScaNN
index; `load_index` reads back any index that `ItemIndex.save` wrote. `IndexBuilder`
bundles both with one config: it is what the trainer's export is handed, so that the
index format stays the serving side's while the export writes it.
"""

import dataclasses
import json
import os

import numpy as np

from serving.brute_force_index import BruteForceIndex
from serving.index_config import IndexConfig
from serving.item_index import INDEX_CONFIG_FILE, ItemIndex
from serving.scann_index import ScannIndex

_KINDS: dict[str, type[ItemIndex]] = {
    BruteForceIndex.kind: BruteForceIndex,
    ScannIndex.kind: ScannIndex,
}


def build_index(embeddings: np.ndarray, config: IndexConfig | None = None) -> ItemIndex:
    """An index over `embeddings` `[num_items, dim]` as `config` describes (resolved).

    Raises:
      ValueError: `embeddings` is not a non-empty `[num_items, dim]` matrix.
    """
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must be [num_items > 0, dim], got {embeddings.shape}")
    config = (config or IndexConfig()).resolved(embeddings.shape[0])
    if config.kind == "brute_force":
        return BruteForceIndex(embeddings, config)
    return ScannIndex.build(embeddings, config)


def load_index(directory: str) -> ItemIndex:
    """The index saved in `directory` by `ItemIndex.save`.

    Raises:
      FileNotFoundError: no `index_config.json` in `directory`.
      ValueError: an unknown index kind.
    """
    path = os.path.join(directory, INDEX_CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no index here (expected {INDEX_CONFIG_FILE})")
    with open(path) as f:
        saved = json.load(f)
    if saved["kind"] not in _KINDS:
        raise ValueError(f"{path}: unknown index kind {saved['kind']!r}")
    config = IndexConfig.from_config(saved["config"])
    return _KINDS[saved["kind"]].load(directory, config, int(saved["dim"]))


@dataclasses.dataclass(frozen=True)
class IndexBuilder:
    """Builds indexes with one `IndexConfig` and loads them back (the export's builder)."""

    config: IndexConfig = dataclasses.field(default_factory=IndexConfig)

    def build(self, embeddings: np.ndarray, *, spherical: bool = False) -> ItemIndex:
        """`build_index` with this config; `spherical` for unit-length (cosine) embeddings."""
        config = dataclasses.replace(self.config, spherical=True) if spherical else self.config
        return build_index(embeddings, config)

    def load(self, directory: str) -> ItemIndex:
        return load_index(directory)
