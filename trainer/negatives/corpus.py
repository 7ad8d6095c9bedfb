"""CorpusNegatives: items drawn uniformly from the whole catalog."""

from typing import Any

import tensorflow as tf

from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.source import NegativeSource


@tf.keras.utils.register_keras_serializable(package="twotower")
class CorpusNegatives(NegativeSource):
    """`count` items uniform over the catalog, shared by the batch or drawn per row.

    Shared and corrected: the corpus half of Mixed Negative Sampling (Yang et al. 2020),
    expected count `count / num_items` per item, combined with the in-batch proposal.
    Per row, group "C": UMA²'s Space C (entire space, not recalled), uncorrected; the
    row's own positive is masked (accidental hit), never used as its negative.

    Per row with a `pool`: the batch draws `pool` catalog items, encodes them once, and
    each row draws its `count` from the pool. Each draw is still uniform over the
    catalog (a uniform pick of a uniform draw), rows share items, and the item tower
    and the sparse updates see at most `pool` items a step instead of batch x count.
    """

    def __init__(
        self,
        count: int,
        per_row: bool = False,
        group: str = "other",
        corrected: bool = False,
        pool: int = 0,
        **kwargs: Any,
    ):
        super().__init__(count=count, **kwargs)
        if pool and not per_row:
            raise ValueError("a pool is for per-row draws; shared draws are a pool already")
        self._per_row = per_row
        self._group = group
        self.corrected = corrected
        self._pool = pool

    def _sample_indices(self, batch: Batch) -> tf.Tensor:
        num_items = batch.num_items
        shape = [tf.shape(batch.positive_ids)[0], self._count] if self._per_row else [self._count]
        return tf.cast(tf.random.uniform(shape, maxval=num_items, dtype=tf.int32), tf.int64)

    def sample(self, batch: Batch) -> Candidates:
        if self._pool:
            return self._sample_from_pool(batch)
        indices = self._sample_indices(batch)
        return Candidates(
            name=self.name, group=self._group, ids=indices, embeddings=batch.encode(indices)
        )

    def _sample_from_pool(self, batch: Batch) -> Candidates:
        pool = tf.random.uniform([self._pool], maxval=batch.num_items, dtype=tf.int32)
        pool = tf.cast(pool, tf.int64)
        shape = [tf.shape(batch.positive_ids)[0], self._count]
        picks = tf.random.uniform(shape, maxval=self._pool, dtype=tf.int32)
        return Candidates(
            name=self.name,
            group=self._group,
            ids=tf.gather(pool, picks),
            embeddings=tf.gather(batch.encode(pool), picks),
        )

    def expected_count(self, ids: tf.Tensor, batch: Batch) -> tf.Tensor:
        return tf.fill(tf.shape(ids), self._count / batch.num_items)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "per_row": self._per_row,
            "group": self._group,
            "corrected": self.corrected,
            "pool": self._pool,
        }
