"""ClusterNegatives: out-of-batch hard negatives from the positive's cluster."""

from typing import Any

import tensorflow as tf

from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.cluster_pool import ClusterPool
from trainer.negatives.draws import draw_seed, step_counter
from trainer.negatives.source import NegativeSource


@tf.keras.utils.register_keras_serializable(package="twotower")
class ClusterNegatives(NegativeSource):
    """Per positive, `cluster` items of its cluster mixed with `random` catalog items
    (the paper's ratios 1:15 and 1:31 random:cluster). Clusters come from the catalog, or
    from k-means of the item embeddings refreshed every N steps (a KMeansRefresh callback
    the trainer adds). Uncorrected: hard negatives are meant to be over-sampled.

    False negatives: users like several items of a cluster, so some same-cluster draws
    are items the row's user would click. With `margin` set, a same-cluster draw the
    current model scores at or above the positive's score minus `margin` is skipped (not
    a negative this step); random draws are always kept. The scores carry no gradient.

    With `shared`, rows whose positives share a cluster share that cluster's draws
    (`ClusterPool.sample`): the item tower then encodes about one cluster's draws per
    distinct cluster in the batch instead of one set per row, which is most of this
    source's cost.
    """

    def __init__(
        self,
        cluster: int,
        random: int,
        num_items: int,
        num_clusters: int,
        max_pool_size: int = 4096,
        seed: int = 0,
        margin: float | None = None,
        shared: bool = False,
        **kwargs: Any,
    ):
        super().__init__(count=cluster + random, **kwargs)
        self._cluster = cluster
        self._shared = shared
        self._random = random
        self._seed = seed
        self._margin = margin
        self.pool = ClusterPool(num_items, num_clusters, max_pool_size, seed=seed, name="pool")
        self._step = step_counter()

    def sample(self, batch: Batch) -> Candidates:
        positives = batch.item_index(batch.positive_ids)
        indices = self.pool.sample(
            tf.maximum(positives, 0),
            self._cluster,
            self._random,
            seed=draw_seed(self._seed, self._step, self.name),
            shared=self._shared,
        )
        ids = tf.cast(indices, tf.int64)
        embeddings = batch.encode(ids)
        if self._margin is None:
            return Candidates(self.name, "other", ids, embeddings)
        return Candidates(self.name, "other", ids, embeddings, valid=self._keep(batch, embeddings))

    def _keep(self, batch: Batch, embeddings: tf.Tensor) -> tf.Tensor:
        """`[batch, cluster + random]` False for same-cluster draws that score within
        `margin` of the row's positive (likely false negatives)."""
        scores = tf.stop_gradient(tf.einsum("bd,bnd->bn", batch.query, embeddings))
        positive = tf.stop_gradient(tf.reduce_sum(batch.query * batch.positive, axis=1))
        near = scores >= positive[:, tf.newaxis] - self._margin
        is_cluster = tf.range(self._cluster + self._random) < self._cluster
        return tf.logical_not(tf.logical_and(near, is_cluster[tf.newaxis]))

    def update(self, batch: Batch) -> None:
        self._step.assign_add(1)

    def get_config(self) -> dict[str, Any]:
        config = {
            **super().get_config(),
            "cluster": self._cluster,
            "random": self._random,
            "num_items": self.pool.num_items,
            "num_clusters": self.pool.num_clusters,
            "seed": self._seed,
            "margin": self._margin,
            "shared": self._shared,
        }
        config.pop("count")
        return config
