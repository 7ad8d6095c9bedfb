"""ExposurePropensity: how often the legacy system showed each item, as a logit offset.

Logged clicks are exposure times preference: an item is clicked in the logs at a rate
π(i) · c(u, i), where π is the chance that the legacy system showed it and c the chance
that the user clicks it once shown. Any loss fitted to the logs learns the product, so
popular, often-shown items win whatever users think of them. Training with log π(i)
added to every candidate's logit (the positive's too, in softmax and BCE alike) lets the
model's own score learn the rest, c(u, i): the exposure is divided out, the way logit
adjustment divides a label prior out (Menon et al., 2021). At serving the offset is
gone. Items the legacy system never showed get log of the smoothing pseudo-count: the
logs say nothing about them, so they are hardly ever taught to be negatives.

π(i) = (training exposures of i + smoothing) / (training requests + smoothing), from the
dataset's item_exposure.tsv (docs/dataset.md).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.negatives.candidates import by_index, catalog_table


@tf.keras.utils.register_keras_serializable(package="twotower")
class ExposurePropensity(tf.keras.layers.Layer):
    """Item ids `[...]` -> log π(item) `[...]`, from training exposure counts.

    Args:
      items: item ids with at least one training exposure.
      exposures: their exposure counts, same order.
      requests: training requests the counts come from.
      smoothing: pseudo-count added to every item (and the only count of an item the
        legacy system never showed).
      strength: the offset is strength · log π: 1 divides the exposure out, 0 ignores it.
    """

    def __init__(
        self,
        items: Sequence[str],
        exposures: Sequence[int],
        requests: int,
        smoothing: float = 1.0,
        strength: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if len(items) != len(exposures):
            raise ValueError(f"{len(items)} items but {len(exposures)} exposure counts")
        if requests < 1 or smoothing <= 0:
            raise ValueError(f"need requests >= 1 and smoothing > 0, got {requests}, {smoothing}")
        # numpy, not lists: Keras walks tracked Python containers at every step.
        self._items = np.asarray(items, dtype=object)
        self._exposures = np.asarray(exposures, dtype=np.int64)
        self._requests = int(requests)
        self._smoothing = float(smoothing)
        self._strength = float(strength)
        denominator = self._requests + self._smoothing
        log_pi = self._strength * np.log((self._exposures + self._smoothing) / denominator)
        self._by_index = None  # log π by catalog index + 1, made by `bind`
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self._items.astype(str), tf.string), tf.constant(log_pi, tf.float32)
            ),
            default_value=float(self._strength * np.log(self._smoothing / denominator)),
        )

    def bind(self, catalog: list[str]) -> None:
        """Makes the table by catalog index that `call` reads for integer inputs (the
        training step's items are catalog indices, looked up in the input pipeline)."""
        self._by_index = catalog_table(catalog, self._table.lookup)

    def call(self, item_ids: tf.Tensor) -> tf.Tensor:
        """log π of each id (or int64 catalog index, after `bind`), same shape; padding
        ("" or -1) gets the never-shown value."""
        if not item_ids.dtype.is_integer:
            return self._table.lookup(item_ids)
        if self._by_index is None:
            raise ValueError("ExposurePropensity: bind(catalog) before passing catalog indices")
        return by_index(self._by_index, item_ids)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "items": self._items.astype(str).tolist(),
            "exposures": self._exposures.tolist(),
            "requests": self._requests,
            "smoothing": self._smoothing,
            "strength": self._strength,
        }
