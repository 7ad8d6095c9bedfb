"""ScannIndex: approximate top-K by inner product with ScaNN (`scann_ops_pybind`).

No TensorFlow ops are involved, so the index runs beside a stock TF Serving rather than
inside it (stock TF Serving has no ScaNN ops).
"""

import numpy as np
from scann.scann_ops.py import scann_ops_pybind

from serving.index_config import IndexConfig
from serving.item_index import ItemIndex

# Batches of at least this many queries are searched on ScaNN's thread pool.
PARALLEL_FROM = 256


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
        # One query: ScaNN's single search. A batch below PARALLEL_FROM: one thread (the
        # service's concurrent requests already use the cores). A larger batch (offline
        # evaluation, a big request): ScaNN splits it over its thread pool.
        pre_reorder = max(self._config.reordering_num_neighbors, n)
        options = {"final_num_neighbors": n, "pre_reorder_num_neighbors": pre_reorder}
        if len(queries) == 1:
            indices, scores = self._searcher.search(queries[0], **options)
            return np.asarray(indices)[None], np.asarray(scores)[None]
        search = (
            self._searcher.search_batched_parallel
            if len(queries) >= PARALLEL_FROM
            else self._searcher.search_batched
        )
        indices, scores = search(queries, **options)
        return np.asarray(indices), np.asarray(scores)

    def _save(self, directory: str) -> None:
        # Relative asset paths: the folder is written under a temporary name and renamed.
        self._searcher.serialize(directory, relative_path=True)

    @classmethod
    def load(cls, directory: str, config: IndexConfig, dim: int) -> "ScannIndex":
        return cls(scann_ops_pybind.load_searcher(directory), config, dim)
