"""NegativeSource: the interface every negative source implements."""

from typing import Any

import tensorflow as tf

from trainer.negatives.candidates import Batch, Candidates


class NegativeSource(tf.keras.layers.Layer):
    """A source of negatives for the loss.

    `sample` returns this step's candidates; `update` runs after the loss in a training
    step (enqueue, frequency counts). A source whose `corrected` is True takes part in
    the logQ correction: each candidate's and each positive's logit is lowered by
    log Σ_s expected_count_s(item) over all corrected sources (the mixture proposal).
    """

    corrected = False

    def __init__(self, count: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        if count < 0:
            raise ValueError(f"{self.name}: count must be >= 0, got {count}")
        self._count = count

    def sample(self, batch: Batch) -> Candidates | None:
        """This step's candidates for the shared loss; None if the source adds none."""
        raise NotImplementedError

    def bind(self, candidate_tower: tf.keras.Model) -> None:
        """Called once by the model with its item tower, for sources that need more of
        it than a batch gives (default: nothing)."""

    def extra_loss(self, batch: Batch) -> tf.Tensor | None:
        """A loss term of the source's own, added to the model's (default: none)."""
        return None

    def update(self, batch: Batch) -> None:
        """Updates the source's state after a training step's loss (default: none)."""

    def expected_count(self, ids: tf.Tensor, batch: Batch) -> tf.Tensor:
        """Expected occurrences of each item among this source's candidates in one step."""
        raise NotImplementedError(f"{type(self).__name__} takes no part in logQ correction")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count": self._count}
