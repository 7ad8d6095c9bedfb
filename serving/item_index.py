"""ItemIndex: top-K items by inner product, the base of the exact and ScaNN indexes.

An index saves to a folder with `index_config.json` beside its own files; see
`serving.index_io` for building and loading whichever kind.
"""

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.index_config import IndexConfig

INDEX_CONFIG_FILE = "index_config.json"


class ItemIndex:
    """Top-K rows of an `[num_items, dim]` embedding matrix by inner product.

    Subclasses implement `_search(queries, n) -> (indices, scores)` returning the best
    `n` rows per query, best first; this class adds exclusions and the K bookkeeping.
    """

    kind = "base"

    def __init__(self, config: IndexConfig, num_items: int, dim: int):
        self._config = config
        self.num_items = num_items
        self.dim = dim

    @property
    def config(self) -> IndexConfig:
        return self._config

    def describe(self) -> dict[str, Any]:
        """{"kind", "config": the resolved settings} (the export manifest's `index`)."""
        return {"kind": self.kind, "config": self._config.get_config()}

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[Sequence[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best items of each query that are not in its `exclude` list.

        Args:
          queries: `[batch_size, dim]` float32 query embeddings.
          k: items per query, 1 <= k <= num_items.
          exclude: per query, row indices never to return.

        Returns:
          (indices `[batch_size, k]` int64, scores `[batch_size, k]` float32), best
          first; where fewer than `k` items remain, the tail is index -1, score -inf.

        Raises:
          ValueError: wrong query shape or k out of range.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [batch_size, {self.dim}], got {queries.shape}")
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in [1, {self.num_items}], got {k}")
        excluded = [set(e) for e in exclude] if exclude is not None else []
        if excluded and len(excluded) != len(queries):
            raise ValueError(f"exclude has {len(excluded)} rows, queries {len(queries)}")
        extra = max((len(e) for e in excluded), default=0)
        indices, scores = self._search(queries, min(self.num_items, k + extra))
        indices = indices.astype(np.int64)
        # ScaNN pads a search whose leaves held fewer than n items with NaN scores: those
        # slots are "no item" (-1), never an item with a NaN score.
        empty = ~np.isfinite(scores)
        if empty.any():
            indices = np.where(empty, -1, indices)
            scores = np.where(empty, -np.inf, scores)
        if not extra:
            return _pad(indices[:, :k], scores[:, :k], k)
        out_indices = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, skip in enumerate(excluded):
            keep = [j for j, item in enumerate(indices[row]) if item >= 0 and item not in skip]
            keep = keep[:k]
            out_indices[row, : len(keep)] = indices[row, keep]
            out_scores[row, : len(keep)] = scores[row, keep]
        return out_indices, out_scores

    def _search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def save(self, directory: str) -> None:
        """Writes the index and `index_config.json` into `directory` (created)."""
        os.makedirs(directory, exist_ok=True)
        self._save(directory)
        with open(os.path.join(directory, INDEX_CONFIG_FILE), "w") as f:
            json.dump(
                {"kind": self.kind, "num_items": self.num_items, "dim": self.dim}
                | {"config": self._config.get_config()},
                f,
                indent=2,
            )

    def _save(self, directory: str) -> None:
        raise NotImplementedError


def _pad(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Widens results to `k` columns (index -1, score -inf) where a search found fewer."""
    scores = scores.astype(np.float32)
    if indices.shape[1] == k:
        return indices, scores
    missing = k - indices.shape[1]
    return (
        np.pad(indices, ((0, 0), (0, missing)), constant_values=-1),
        np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf),
    )
