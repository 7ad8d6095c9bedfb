"""Retriever: query tower SavedModel + item index -> top-K items for a user, in process.

Reads only an export directory (the contract with trainer/). The library form of the
retrieval service (`serving.service`), for notebooks, the demo and tests.
"""

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.export_version import load_export_version
from serving.intention_search import search_outputs
from serving.query_embedder import SavedModelEmbedder
from serving.query_features import feature_batch


class Retriever:
    """Embeds users with the exported query tower and searches the exported item index."""

    def __init__(self, export_dir: str, version: int | None = None):
        self._export = load_export_version(export_dir, version)
        self.manifest = self._export.manifest
        self.version = self._export.version
        self.item_ids = self._export.item_ids
        self._row = {item: i for i, item in enumerate(self.item_ids)}
        self._embedder = SavedModelEmbedder(self._export.saved_model_dir)

    @property
    def item_embeddings(self) -> np.ndarray:
        """`[num_items, dim]` float32, the rows of `item_ids`."""
        return np.load(os.path.join(self._export.export_dir, self.manifest["items"]["embeddings"]))

    def embed(self, users: Sequence[dict[str, Any]]) -> np.ndarray:
        """`[len(users), dim]` query embeddings from raw feature dicts.

        Each user dict holds "user_id" (str) and optionally "history" (item ids) and
        each "user.<name>" feature by its kind: a string or list of strings, a number
        (numeric), a list of `dim` numbers (vector); absent ones are empty or missing.
        """
        return self._embedder.embed(feature_batch(users, self._export.inputs))

    def retrieve(
        self,
        user: dict[str, Any],
        k: int = 10,
        exclude: Sequence[str] = (),
        intentions: bool = True,
    ) -> list[tuple[str, float]]:
        """The `k` best (item id, score) pairs for one user, never an excluded item.

        A Multi-CLRec export's intention vectors are searched too and merged with the
        main list (`serving.intention_search`) unless `intentions` is False.
        """
        excluded = [self._row[i] for i in exclude if i in self._row]
        k = min(k, len(self.item_ids) - len(set(excluded)))
        if k <= 0:
            return []
        outputs = self._embedder.outputs(feature_batch([user], self._export.inputs))
        indices, scores, _ = search_outputs(self._export.index, outputs, k, [excluded], intentions)
        return [
            (self.item_ids[i], float(s))
            for i, s in zip(indices[0], scores[0], strict=True)
            if i >= 0
        ]
