"""Retriever: query tower SavedModel + item embeddings -> top-K items for a user.

Reads only an export directory (the contract with trainer/). Exact (brute-force)
search; the ScaNN index slots in behind the same `retrieve` call.
"""

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf


class Retriever:
    """Embeds users with the exported query tower and scores the whole catalog."""

    def __init__(self, export_dir: str, version: int | None = None):
        with open(os.path.join(export_dir, "export_manifest.json")) as f:
            self.manifest = json.load(f)
        tower = self.manifest["query_tower"]
        self.version = version or tower["latest"]
        path = os.path.join(export_dir, "query_tower", str(self.version))
        self._model = tf.saved_model.load(path)
        self._signature = self._model.signatures[tower["signature"]]
        self._input_names = list(tower["inputs"])
        items = self.manifest["items"]
        self.item_embeddings = np.load(os.path.join(export_dir, items["embeddings"]))
        with open(os.path.join(export_dir, items["ids"])) as f:
            self.item_ids = [line.rstrip("\n") for line in f]
        self._index = {item: i for i, item in enumerate(self.item_ids)}

    def embed(self, users: Sequence[dict[str, Any]]) -> np.ndarray:
        """`[len(users), dim]` query embeddings from raw feature dicts.

        Each user dict holds "user_id" (str) and optionally "history" (item ids) and
        each user feature as a string or list of strings; absent ones are empty.
        """
        batch = {}
        for name in self._input_names:
            if name == "user_id":
                batch[name] = tf.constant([str(u.get("user_id", "")) for u in users])
                continue
            rows = [u.get(name, []) for u in users]
            rows = [[r] if isinstance(r, str) else [str(t) for t in r] for r in rows]
            width = max(1, max(len(r) for r in rows))
            batch[name] = tf.constant([r + [""] * (width - len(r)) for r in rows])
        return self._signature(**batch)["embedding"].numpy()

    def retrieve(
        self, user: dict[str, Any], k: int = 10, exclude: Sequence[str] = ()
    ) -> list[tuple[str, float]]:
        """The `k` best (item id, score) pairs for one user, never an excluded item."""
        scores = self.item_embeddings @ self.embed([user])[0]
        excluded = [self._index[i] for i in exclude if i in self._index]
        scores[excluded] = -np.inf
        k = min(k, len(scores) - len(excluded))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.item_ids[i], float(scores[i])) for i in top]
