"""k-means over item embeddings, and the callback that refreshes a ClusterPool with it."""

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.negatives.cluster_pool import ClusterPool

METRICS = ("euclidean", "cosine")
_CHUNK = 8192  # rows per distance block: bounds memory at _CHUNK * num_clusters floats


def _nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centroid, `[n]` each."""
    labels = np.empty(len(x), np.int64)
    distances = np.empty(len(x), np.float64)
    squared_norms = np.einsum("ij,ij->i", centroids, centroids)
    for begin in range(0, len(x), _CHUNK):
        block = x[begin : begin + _CHUNK]
        d2 = squared_norms[None, :] - 2.0 * block @ centroids.T
        labels[begin : begin + _CHUNK] = np.argmin(d2, axis=1)
        nearest = d2[np.arange(len(block)), labels[begin : begin + _CHUNK]]
        distances[begin : begin + _CHUNK] = np.maximum(
            nearest + np.einsum("ij,ij->i", block, block), 0.0
        )
    return labels, distances


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Arthur & Vassilvitskii (2007): each next centre drawn with probability ~ D(x)^2."""
    squared_norms = np.einsum("ij,ij->i", x, x)
    index = rng.integers(len(x))
    centroids = [x[index]]
    distances = np.full(len(x), np.inf)
    for _ in range(k):
        centre = centroids[-1]
        to_centre = squared_norms - 2.0 * (x @ centre) + centre @ centre
        distances = np.minimum(distances, np.maximum(to_centre, 0.0))
        if len(centroids) == k:
            break
        cumulative = np.cumsum(distances, dtype=np.float64)
        if cumulative[-1] > 0:
            index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        else:  # fewer distinct points than k: any point will do
            index = int(rng.integers(len(x)))
        centroids.append(x[min(index, len(x) - 1)])
    return np.stack(centroids)


def kmeans(
    embeddings: np.ndarray,
    num_clusters: int,
    iterations: int = 20,
    seed: int = 0,
    metric: str = "euclidean",
) -> np.ndarray:
    """Lloyd's k-means with k-means++ initialisation; the same seed, the same labels.

    With `metric="cosine"` rows and centroids are L2-normalised (spherical k-means),
    which groups by direction only: use it for embeddings scored by cosine
    similarity. A cluster that empties takes the point farthest from its centroid.

    Args:
      embeddings: `[n, d]` item embeddings, n >= num_clusters.
      num_clusters: k.
      iterations: at most this many assign/update rounds (stops when labels settle).
      seed: seed of the k-means++ draws.
      metric: "euclidean" or "cosine".

    Returns:
      `[n]` int64 cluster of every row, in [0, num_clusters).

    Raises:
      ValueError: bad shape, non-finite values, bad num_clusters or metric.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be [n, d] with n > 0, got shape {x.shape}")
    if not 1 <= num_clusters <= len(x):
        raise ValueError(f"num_clusters must be in [1, {len(x)}], got {num_clusters}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    centroids = _kmeans_plus_plus(x, num_clusters, np.random.default_rng(seed))
    labels, distances = _nearest(x, centroids)
    for _ in range(iterations):
        counts = np.bincount(labels, minlength=num_clusters)
        # Per-column bincount: np.add.at is ~100x slower for this.
        sums = np.stack(
            [np.bincount(labels, weights=column, minlength=num_clusters) for column in x.T], axis=1
        )
        empty = np.flatnonzero(counts == 0)
        centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        # Refill empty clusters with the worst-served points, farthest first.
        centroids[empty] = x[np.argsort(-distances, kind="stable")[: len(empty)]]
        if metric == "cosine":
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        new_labels, distances = _nearest(x, centroids)
        settled = np.array_equal(new_labels, labels)
        labels = new_labels
        if settled:
            break
    return labels


class KMeansRefresh(tf.keras.callbacks.Callback):
    """Re-clusters item embeddings into a `ClusterPool` every `every_steps` steps.

    Steps are the optimizer's iterations, so a run resumed from a checkpoint
    refreshes at the same steps as an uninterrupted one. `embed_items` runs eagerly
    between train steps (e.g. the item tower over the catalog).
    """

    def __init__(
        self,
        pool: ClusterPool,
        embed_items: Callable[[], np.ndarray],
        every_steps: int,
        iterations: int = 20,
        seed: int = 0,
        metric: str = "euclidean",
        refresh_at_start: bool = False,
    ):
        """Builds the callback.

        Args:
          pool: the pool to refresh; k is its `num_clusters`.
          embed_items: returns `[pool.num_items, d]` embeddings, row i = item i.
          every_steps: refresh after every this many training steps.
          iterations: k-means iterations per refresh.
          seed: k-means seed.
          metric: "euclidean" or "cosine" (see `kmeans`).
          refresh_at_start: also refresh when training begins.

        Raises:
          ValueError: every_steps < 1 or an unknown metric.
        """
        super().__init__()
        if every_steps < 1:
            raise ValueError(f"every_steps must be positive, got {every_steps}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self._pool = pool
        self._embed_items = embed_items
        self._every_steps = every_steps
        self._iterations = iterations
        self._seed = seed
        self._metric = metric
        self._refresh_at_start = refresh_at_start
        self._period = 0
        self.refreshes = 0

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._period = self._step() // self._every_steps
        if self._refresh_at_start:
            self.refresh()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Compare periods, not `step % every_steps`: with steps_per_execution > 1
        # this hook does not see every step.
        period = self._step() // self._every_steps
        if period > self._period:
            self._period = period
            self.refresh()

    def refresh(self) -> None:
        """Embeds the catalog, clusters it and assigns the clusters to the pool.

        Raises:
          ValueError: `embed_items` returned the wrong number of rows.
        """
        embeddings = np.asarray(self._embed_items())
        if embeddings.ndim != 2 or len(embeddings) != self._pool.num_items:
            raise ValueError(
                f"embed_items must return [{self._pool.num_items}, d], got {embeddings.shape}"
            )
        labels = kmeans(
            embeddings,
            self._pool.num_clusters,
            iterations=self._iterations,
            seed=self._seed,
            metric=self._metric,
        )
        self._pool.assign(labels)
        self.refreshes += 1
