"""Content embeddings of the catalog and the clusters k-means finds in them.

The hard-negative paper clusters items by a language model's representation of their
content; here that is the sentence-encoder embeddings preprocessing made of the text
features, joined with the vector features the catalog carries.
"""

import numpy as np

from common.contracts import TEXT, VECTOR
from trainer.dataset import Dataset
from trainer.negatives.kmeans import kmeans


class NoContent(ValueError):
    """The dataset has no text or vector item feature to cluster by."""


def content_embeddings(dataset: Dataset) -> np.ndarray:
    """`[num_items, d]`: each text and vector item feature L2-normalised (zeros where an
    item has none) and joined, features in name order, so each weighs the same.

    Raises:
      NoContent: the dataset has neither text nor vector item features.
    """
    kinds = dataset.item_dense()
    names = sorted(n for n, spec in kinds.items() if spec["kind"] in (TEXT, VECTOR))
    if not names:
        raise NoContent(
            f"{dataset.directory}: negatives.cluster_source=content needs item text or "
            "vector features (data.text_features, data.vector_features, or a catalog "
            "feature holding a list of numbers); the dataset has none"
        )
    values = dataset.item_dense_values()
    parts = []
    for name in names:
        x = np.nan_to_num(values[name].astype(np.float32), nan=0.0)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        parts.append(x / np.maximum(norms, 1e-12))
    return np.concatenate(parts, axis=1)


def content_clusters(dataset: Dataset, num_clusters: int, seed: int = 0) -> np.ndarray:
    """`[num_items]` cluster of each item: spherical k-means of `content_embeddings`.

    Raises:
      NoContent: as `content_embeddings`.
    """
    embeddings = content_embeddings(dataset)
    return kmeans(embeddings, min(num_clusters, len(embeddings)), seed=seed, metric="cosine")
