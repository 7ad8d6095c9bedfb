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
        num_items = tf.shape(batch.item_ids)[0]
        shape = [tf.shape(batch.positive_ids)[0], self._count] if self._per_row else [self._count]
        return tf.random.uniform(shape, maxval=num_items, dtype=tf.int32)

    def sample(self, batch: Batch) -> Candidates:
        indices = self._sample_indices(batch)
        ids = tf.gather(batch.item_ids, indices)
        # By index where the model offers it: no second lookup of the drawn ids.
        embeddings = (
            batch.encode(ids) if batch.encode_indices is None else batch.encode_indices(indices)
        )
        return Candidates(name=self.name, group=self._group, ids=ids, embeddings=embeddings)

    def expected_count(self, ids: tf.Tensor, batch: Batch) -> tf.Tensor:
        num_items = tf.cast(tf.shape(batch.item_ids)[0], tf.float32)
        return tf.fill(tf.shape(ids), self._count / num_items)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "per_row": self._per_row,
            "group": self._group,
            "corrected": self.corrected,
        }
