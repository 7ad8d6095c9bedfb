"""BruteForceIndex: exact top-K by inner product over the whole corpus (numpy)."""

import os

import numpy as np

from serving.index_config import IndexConfig
from serving.item_index import ItemIndex

EMBEDDINGS_FILE = "embeddings.npy"
# Queries scored at once: bounds the `[rows, num_items]` score matrix to ~256 MB at 1M items.
_QUERY_CHUNK = 64


class BruteForceIndex(ItemIndex):
    """Scores every item; the exact reference the approximate index is measured against."""

    kind = "brute_force"

    def __init__(self, embeddings: np.ndarray, config: IndexConfig | None = None):
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be [num_items, dim], got {embeddings.shape}")
        config = config or IndexConfig(kind="brute_force")
        super().__init__(config, embeddings.shape[0], embeddings.shape[1])
        self._embeddings = embeddings

    def _search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        indices, scores = [], []
        for start in range(0, len(queries), _QUERY_CHUNK):
            block = queries[start : start + _QUERY_CHUNK] @ self._embeddings.T
            if n < block.shape[1]:
                top = np.argpartition(-block, n - 1, axis=1)[:, :n]
            else:
                top = np.broadcast_to(np.arange(block.shape[1]), block.shape).copy()
            top_scores = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            indices.append(np.take_along_axis(top, order, axis=1))
            scores.append(np.take_along_axis(top_scores, order, axis=1))
        return np.concatenate(indices), np.concatenate(scores)

    def _save(self, directory: str) -> None:
        np.save(os.path.join(directory, EMBEDDINGS_FILE), self._embeddings)

    @classmethod
    def load(cls, directory: str, config: IndexConfig, dim: int) -> "BruteForceIndex":
        del dim  # the saved matrix has it
        return cls(np.load(os.path.join(directory, EMBEDDINGS_FILE)), config)
