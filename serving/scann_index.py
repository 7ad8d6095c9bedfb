"""ScannIndex: approximate top-K by inner product with ScaNN (`scann_ops_pybind`).

No TensorFlow ops are involved, so the index runs beside a stock TF Serving rather than
inside it (stock TF Serving has no ScaNN ops).
"""

import numpy as np
from scann.scann_ops.py import scann_ops_pybind

from serving.item_index import IndexConfig, ItemIndex


class ScannIndex(ItemIndex):
    """Partitioning tree (optional) + anisotropic AH scoring + exact reordering."""

    kind = "scann"

    def __init__(self, searcher: scann_ops_pybind.ScannSearcher, config: IndexConfig, dim: int):
        super().__init__(config, int(searcher.size()), dim)
        self._searcher = searcher

    @classmethod
    def build(cls, embeddings: np.ndarray, config: IndexConfig) -> "ScannIndex":
        """Trains a searcher on `embeddings` `[num_items, dim]` with a resolved `config`."""
        num_items, dim = embeddings.shape
        sample = min(num_items, config.training_sample_size)
        builder = scann_ops_pybind.builder(embeddings, config.num_neighbors, "dot_product")
        if config.num_leaves:
            builder = builder.tree(
                num_leaves=config.num_leaves,
                num_leaves_to_search=config.num_leaves_to_search,
                training_sample_size=sample,
                spherical=config.spherical,
            )
        builder = builder.score_ah(
            config.dimensions_per_block,
            anisotropic_quantization_threshold=config.anisotropic_quantization_threshold,
            training_sample_size=sample,
        ).reorder(config.reordering_num_neighbors)
        return cls(builder.build(), config, dim)

    def _search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        pre_reorder = max(self._config.reordering_num_neighbors, n)
        if len(queries) == 1:
            indices, scores = self._searcher.search(
                queries[0], final_num_neighbors=n, pre_reorder_num_neighbors=pre_reorder
            )
            return np.asarray(indices)[None], np.asarray(scores)[None]
        indices, scores = self._searcher.search_batched(
            queries, final_num_neighbors=n, pre_reorder_num_neighbors=pre_reorder
        )
        return np.asarray(indices), np.asarray(scores)

    def search_parallel(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` of a large batch on all cores (no exclusions), for offline use."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        pre_reorder = max(self._config.reordering_num_neighbors, k)
        indices, scores = self._searcher.search_batched_parallel(
            queries, final_num_neighbors=k, pre_reorder_num_neighbors=pre_reorder
        )
        return np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float32)

    def _save(self, directory: str) -> None:
        # Relative asset paths: the folder is written under a temporary name and renamed.
        self._searcher.serialize(directory, relative_path=True)

    @classmethod
    def load(cls, directory: str, config: IndexConfig, dim: int) -> "ScannIndex":
        return cls(scann_ops_pybind.load_searcher(directory), config, dim)
