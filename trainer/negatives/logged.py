"""LoggedNegatives: UMA²'s Space A and Space B negatives, taken from the example."""

from typing import Any

import tensorflow as tf

from common.contracts import NUM_SPACE_A, NUM_SPACE_B
from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.source import NegativeSource

FEATURES = {"A": "space_a", "B": "space_b"}
# The example feature holding the size of the request's space each group's items come from.
SIZE_FEATURES = {"A": NUM_SPACE_A, "B": NUM_SPACE_B}


@tf.keras.utils.register_keras_serializable(package="twotower")
class LoggedNegatives(NegativeSource):
    """The request's exposed-not-clicked (group "A") or recalled-not-exposed (group "B")
    items, as the preprocessing pipeline kept them per positive (up to `count`)."""

    def __init__(self, group: str, count: int, **kwargs: Any):
        super().__init__(count=count, **kwargs)
        if group not in FEATURES:
            raise ValueError(f"group must be 'A' or 'B', got {group!r}")
        self._group = group

    @property
    def feature(self) -> str:
        """The example feature its items come from."""
        return FEATURES[self._group]

    def sample(self, batch: Batch) -> Candidates:
        # Catalog indices (the model looks the ids up; -1: padding or no catalog item).
        ids = batch.item_index(batch.features[FEATURES[self._group]])[:, : self._count]
        # Pad to `count` columns so every step has the same shape.
        ids = tf.pad(ids, [[0, 0], [0, self._count - tf.shape(ids)[1]]], constant_values=-1)
        ids = tf.ensure_shape(ids, [None, self._count])
        return Candidates(name=self.name, group=self._group, ids=ids, embeddings=batch.encode(ids))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "group": self._group}
