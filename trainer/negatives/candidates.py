"""What every negative source hands to the loss: candidates with their corrections."""

import dataclasses
from collections.abc import Callable

import tensorflow as tf


@dataclasses.dataclass
class Batch:
    """One training batch as the negative sources see it.

    Attributes:
      features: the parsed example features.
      query: `[batch_size, dim]` query embeddings (normalised if the model is cosine).
      positive_ids: `[batch_size]` clicked item ids.
      positive: `[batch_size, dim]` their embeddings.
      encode: item ids of any shape `[...]` -> embeddings `[..., dim]` (the candidate tower).
      item_ids: `[num_items]` every catalog item id, in catalog index order.
      item_index: item ids -> catalog indices (-1 for an unknown id).
      training: whether this is a training step (sources update their state only then).
    """

    features: dict[str, tf.Tensor]
    query: tf.Tensor
    positive_ids: tf.Tensor
    positive: tf.Tensor
    encode: Callable[[tf.Tensor], tf.Tensor]
    item_ids: tf.Tensor
    item_index: Callable[[tf.Tensor], tf.Tensor]
    training: bool


@dataclasses.dataclass
class Candidates:
    """Negatives from one source, shared by the batch (`[n]`) or per row (`[batch_size, n]`).

    Attributes:
      name: the source's name (for metrics).
      group: the loss term it belongs to ("A", "B", "C" for UMA²'s spaces, else "other").
      ids: `[n]` or `[batch_size, n]` item ids; "" marks padding.
      embeddings: `[n, dim]` or `[batch_size, n, dim]`.
      log_q: same shape as ids or None: log of the item's expected count in a batch under
        this source's proposal, subtracted from its logit (logQ correction); None = none.
      weight: same shape as ids or None: importance weight of each negative (IPW).
      valid: same shape as ids or None: False for slots that are not real candidates.
      exclude_diagonal: shared candidates whose row i is batch row i's own positive
        (in-batch negatives), masked for that row.
    """

    name: str
    group: str
    ids: tf.Tensor
    embeddings: tf.Tensor
    log_q: tf.Tensor | None = None
    weight: tf.Tensor | None = None
    valid: tf.Tensor | None = None
    exclude_diagonal: bool = False

    @property
    def shared(self) -> bool:
        return self.ids.shape.rank == 1
