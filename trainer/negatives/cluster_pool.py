"""ClusterPool: per-cluster item pools for out-of-batch hard negatives."""

from typing import Any

import numpy as np
import tensorflow as tf

_ONLY_FIRST = tf.VariableAggregation.ONLY_FIRST_REPLICA


def _seed_pair(seed: int | tf.Tensor) -> tf.Tensor:
    """An int or a `[2]` tensor as the `[2]` int64 seed of stateless random ops."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


@tf.keras.utils.register_keras_serializable(package="twotower")
class ClusterPool(tf.keras.layers.Layer):
    """Items grouped by cluster, to draw negatives from the positive item's cluster.

    `assign` puts every item into the pool of its cluster; a cluster with more than
    `max_pool_size` items keeps a fixed pseudo-random subset: the items ranked
    first by a per-item random key drawn once from `seed` (so the subset does not
    favour low, often popular, item indices, and an item that stays in its cluster
    stays in the pool across refreshes). Until the first `assign` every pool is
    empty and `sample` draws only random negatives.

    State (`tf.Variable`s, not trainable, `ONLY_FIRST_REPLICA`), int64 because
    TensorFlow has no GPU kernel to assign int32 variables: `cluster_of`
    `[num_items]`, `members` `[num_clusters, max_pool_size]` (-1 pads), `sizes`
    `[num_clusters]`, `position` `[num_items]` (an item's slot in its pool, -1 if
    left out).
    """

    def __init__(
        self, num_items: int, num_clusters: int, max_pool_size: int, seed: int = 0, **kwargs: Any
    ):
        super().__init__(**kwargs)
        for name, value in (("num_items", num_items), ("num_clusters", num_clusters)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if max_pool_size < 1:
            raise ValueError(f"max_pool_size must be positive, got {max_pool_size}")
        self._num_items = num_items
        self._num_clusters = num_clusters
        self._max_pool_size = max_pool_size
        self._seed = seed
        self._cluster_of = self._state("cluster_of", [num_items], 0)
        self._members = self._state("members", [num_clusters, max_pool_size], -1)
        self._sizes = self._state("sizes", [num_clusters], 0)
        self._position = self._state("position", [num_items], -1)

    def _state(self, name: str, shape: list[int], value: int) -> tf.Variable:
        return self.add_weight(
            name=name,
            shape=shape,
            dtype=tf.int64,
            initializer=tf.keras.initializers.Constant(value),
            trainable=False,
            aggregation=_ONLY_FIRST,
        )

    @property
    def num_items(self) -> int:
        return self._num_items

    @property
    def num_clusters(self) -> int:
        return self._num_clusters

    @property
    def cluster_of(self) -> tf.Tensor:
        """`[num_items]` int32 cluster of every item."""
        return tf.cast(self._cluster_of, tf.int32)

    @property
    def members(self) -> tf.Tensor:
        """`[num_clusters, max_pool_size]` int32 item indices of each pool, -1 pads."""
        return tf.cast(self._members, tf.int32)

    @property
    def sizes(self) -> tf.Tensor:
        """`[num_clusters]` int32 number of items in each pool."""
        return tf.cast(self._sizes, tf.int32)

    def assign(self, cluster_of: np.ndarray | tf.Tensor) -> None:
        """Rebuilds the pools from a new clustering.

        Args:
          cluster_of: `[num_items]` integer cluster of every item, in
            [0, num_clusters).

        Raises:
          ValueError: wrong shape, or (when eager) a cluster out of range.
        """
        cluster_of = tf.cast(tf.convert_to_tensor(cluster_of), tf.int64)
        if cluster_of.shape.as_list() not in ([self._num_items], [None]):
            raise ValueError(f"cluster_of must be [{self._num_items}], got {cluster_of.shape}")
        if tf.executing_eagerly():
            low, high = int(tf.reduce_min(cluster_of)), int(tf.reduce_max(cluster_of))
            if low < 0 or high >= self._num_clusters:
                raise ValueError(
                    f"cluster_of values must be in [0, {self._num_clusters}), got [{low}, {high}]"
                )
        key = tf.random.stateless_uniform([self._num_items], _seed_pair(self._seed))
        by_key = tf.argsort(key, stable=True)
        order = tf.gather(by_key, tf.argsort(tf.gather(cluster_of, by_key), stable=True))
        cluster = tf.gather(cluster_of, order)  # items sorted by (cluster, key)
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(cluster), cluster, num_segments=self._num_clusters
        )
        first = tf.cumsum(counts, exclusive=True)
        rank = tf.range(self._num_items, dtype=tf.int64) - tf.gather(first, cluster)
        keep = rank < self._max_pool_size
        slots = tf.boolean_mask(tf.stack([cluster, rank], axis=1), keep)
        members = tf.tensor_scatter_nd_update(
            tf.fill([self._num_clusters, self._max_pool_size], tf.constant(-1, tf.int64)),
            slots,
            tf.boolean_mask(tf.cast(order, tf.int64), keep),
        )
        position = tf.scatter_nd(order[:, tf.newaxis], tf.where(keep, rank, -1), [self._num_items])
        self._cluster_of.assign(cluster_of)
        self._members.assign(members)
        self._sizes.assign(tf.minimum(counts, self._max_pool_size))
        self._position.assign(position)

    def sample(
        self,
        item_indices: tf.Tensor,
        num_cluster: int,
        num_random: int,
        seed: int | tf.Tensor,
        shared: bool = False,
    ) -> tf.Tensor:
        """Draws negatives for each positive item.

        The first `num_cluster` columns are drawn uniformly, with replacement, from
        the pool of the positive's cluster without the positive itself; when that
        leaves nothing they are drawn from the whole catalog instead. The last
        `num_random` columns are drawn uniformly from the whole catalog and may hit
        the positive or other in-batch items (remove accidental hits in the loss).

        Args:
          item_indices: `[batch_size]` integer indices of the positive items.
          num_cluster: cluster negatives per positive.
          num_random: random negatives per positive.
          seed: an int or a `[2]` integer tensor; the same seed and state give the
            same draws. Pass e.g. `(run_seed, step)` so that every step differs and a
            resumed run draws what the uninterrupted one did.
          shared: rows whose positives share a cluster share its draws (each row still
            skips its own positive), so a batch holds fewer distinct negatives and the
            item tower encodes fewer items; each row's draws are still uniform over its
            cluster's pool.

        Returns:
          `[batch_size, num_cluster + num_random]` int32 item indices.
        """
        items = tf.cast(tf.reshape(item_indices, [-1]), tf.int64)
        batch_size = tf.shape(items)[0]
        cluster_seed, random_seed, fallback_seed = tf.unstack(
            tf.random.experimental.stateless_split(_seed_pair(seed), num=3)
        )
        cluster = tf.gather(self._cluster_of, items)
        position = tf.gather(self._position, items)[:, tf.newaxis]
        in_pool = position >= 0
        eligible = tf.gather(self._sizes, cluster)[:, tf.newaxis] - tf.cast(in_pool, tf.int64)
        if shared:
            clusters, which = tf.unique(cluster)
            u = tf.random.stateless_uniform([tf.size(clusters), num_cluster], cluster_seed)
            u = tf.gather(u, which)
        else:
            u = tf.random.stateless_uniform([batch_size, num_cluster], cluster_seed)
        draw = tf.cast(tf.floor(u * tf.cast(eligible, tf.float32)), tf.int64)
        draw = tf.clip_by_value(draw, 0, tf.maximum(eligible - 1, 0))
        # Skip the positive's own slot: draws at or past it move up by one.
        draw += tf.cast(in_pool & (draw >= position), tf.int64)
        draw = tf.minimum(draw, self._max_pool_size - 1)
        rows = tf.broadcast_to(cluster[:, tf.newaxis], tf.shape(draw))
        from_pool = tf.gather_nd(self._members, tf.stack([rows, draw], axis=-1))
        fallback = self._uniform_items([batch_size, num_cluster], fallback_seed)
        cluster_draws = tf.where(eligible > 0, from_pool, fallback)
        random_draws = self._uniform_items([batch_size, num_random], random_seed)
        return tf.cast(tf.concat([cluster_draws, random_draws], axis=1), tf.int32)

    def _uniform_items(self, shape: list, seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform(
            shape, seed, minval=0, maxval=self._num_items, dtype=tf.int64
        )

    def call(self, item_indices: tf.Tensor) -> tf.Tensor:
        """Clusters of items: `[batch_size]` integer indices -> `[batch_size]` int32."""
        return tf.cast(tf.gather(self._cluster_of, tf.cast(item_indices, tf.int64)), tf.int32)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_items": self._num_items,
            "num_clusters": self._num_clusters,
            "max_pool_size": self._max_pool_size,
            "seed": self._seed,
        }
