"""The item index: top-K items by inner product, exact or approximate (ScaNN).

`build_index` picks the kind from the corpus size the way ScaNN's own guide does:
brute force below ~20k items, asymmetric hashing (AH) with reordering up to ~100k,
and a k-means partitioning tree (leaves ~ sqrt(n)) in front of AH above that. AH uses
anisotropic quantization, which keeps the large inner products exact where it matters.
An index saves to a folder with `index_config.json` beside its files and loads back with
`load_index`, whatever its kind.
"""

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

INDEX_CONFIG_FILE = "index_config.json"
KINDS = ("auto", "brute_force", "scann")


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How to index the item embeddings.

    Attributes:
      kind: "brute_force", "scann", or "auto" (brute force below `brute_force_below`
        items, ScaNN from there).
      brute_force_below: corpus size under which "auto" stays exact.
      partition_above: corpus size from which ScaNN partitions into leaves.
      num_leaves: partitioning leaves; 0 means round(sqrt(num_items)).
      num_leaves_to_search: leaves searched per query; 0 means max(1, num_leaves // 10).
      dimensions_per_block: AH dimensions per 4-bit code (2 is ScaNN's recommendation).
      anisotropic_quantization_threshold: AH noise-shaping threshold eta (ScaNN's guide:
        0.2 for inner-product search).
      reordering_num_neighbors: AH candidates rescored exactly per query.
      training_sample_size: items sampled to train the partitioner and the quantizer.
      spherical: spherical k-means (for unit-length embeddings, i.e. cosine models).
      num_neighbors: default K of a search.
    """

    kind: str = "auto"
    brute_force_below: int = 20_000
    partition_above: int = 100_000
    num_leaves: int = 0
    num_leaves_to_search: int = 0
    dimensions_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    reordering_num_neighbors: int = 1000
    training_sample_size: int = 250_000
    spherical: bool = False
    num_neighbors: int = 100

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"IndexConfig.kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("brute_force_below", "partition_above", "num_leaves"):
            if getattr(self, name) < 0:
                raise ValueError(f"IndexConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("dimensions_per_block", "reordering_num_neighbors", "num_neighbors"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexConfig.{name} must be >= 1, got {getattr(self, name)}")

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "IndexConfig":
        return cls(**config)

    def resolved(self, num_items: int) -> "IndexConfig":
        """This config with "auto" and the 0 defaults replaced for `num_items` items."""
        kind = self.kind
        if kind == "auto":
            kind = "brute_force" if num_items < self.brute_force_below else "scann"
        leaves = 0
        to_search = 0
        if kind == "scann" and num_items >= self.partition_above:
            leaves = self.num_leaves or max(2, round(math.sqrt(num_items)))
            to_search = min(leaves, self.num_leaves_to_search or max(1, leaves // 10))
        return dataclasses.replace(
            self, kind=kind, num_leaves=leaves, num_leaves_to_search=to_search
        )


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


def build_index(embeddings: np.ndarray, config: IndexConfig | None = None) -> ItemIndex:
    """An index over `embeddings` `[num_items, dim]` as `config` describes (resolved)."""
    from serving.brute_force_index import BruteForceIndex  # noqa: PLC0415
    from serving.scann_index import ScannIndex  # noqa: PLC0415

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
    from serving.brute_force_index import BruteForceIndex  # noqa: PLC0415
    from serving.scann_index import ScannIndex  # noqa: PLC0415

    path = os.path.join(directory, INDEX_CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no index here (expected {INDEX_CONFIG_FILE})")
    with open(path) as f:
        saved = json.load(f)
    config = IndexConfig.from_config(saved["config"])
    kinds = {BruteForceIndex.kind: BruteForceIndex, ScannIndex.kind: ScannIndex}
    if saved["kind"] not in kinds:
        raise ValueError(f"{path}: unknown index kind {saved['kind']!r}")
    return kinds[saved["kind"]].load(directory, config, int(saved["dim"]))
