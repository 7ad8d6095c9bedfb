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
    """

    def __init__(
        self,
        count: int,
        per_row: bool = False,
        group: str = "other",
        corrected: bool = False,
        **kwargs: Any,
    ):
        super().__init__(count=count, **kwargs)
        self._per_row = per_row
        self._group = group
        self.corrected = corrected

    def _sample_indices(self, batch: Batch) -> tf.Tensor:
        num_items = batch.num_items
        shape = [tf.shape(batch.positive_ids)[0], self._count] if self._per_row else [self._count]
        return tf.cast(tf.random.uniform(shape, maxval=num_items, dtype=tf.int32), tf.int64)

    def sample(self, batch: Batch) -> Candidates:
        indices = self._sample_indices(batch)
        return Candidates(
            name=self.name, group=self._group, ids=indices, embeddings=batch.encode(indices)
        )

    def expected_count(self, ids: tf.Tensor, batch: Batch) -> tf.Tensor:
        return tf.fill(tf.shape(ids), self._count / batch.num_items)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "per_row": self._per_row,
            "group": self._group,
            "corrected": self.corrected,
        }
