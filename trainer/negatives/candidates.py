"""What every negative source hands to the loss: candidates with their corrections."""

import dataclasses
from collections.abc import Callable, Sequence

import tensorflow as tf


def catalog_table(catalog: Sequence[str], lookup: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """`lookup` of every catalog id, made once (eagerly): row i + 1 for catalog index i,
    row 0 `lookup("")` for padding or no catalog item (index -1). Read with `by_index`."""
    with tf.init_scope():
        return lookup(tf.constant(["", *catalog], tf.string))


def by_index(table: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """The rows of catalog `indices` (-1: row 0) in a table laid out as `catalog_table`'s."""
    return tf.gather(table, tf.cast(indices, tf.int64) + 1)


@dataclasses.dataclass
class Batch:
    """One training batch as the negative sources see it.

    Items are int64 catalog indices throughout (-1: padding, or no catalog item): the
    input pipeline looks the id strings up (`TwoTowerModel.index_features`), so nothing
    in the step compares, hashes or gathers strings.

    Attributes:
      features: the example features (looked up: ids as rows and indices).
      query: `[batch_size, dim]` query embeddings (normalised if the model is cosine).
      positive_ids: `[batch_size]` int64 catalog indices of the clicked items.
      positive: `[batch_size, dim]` their embeddings.
      encode: catalog indices of any shape `[...]` -> embeddings `[..., dim]` (the
        candidate tower).
      num_items: the catalog's size (indices run over [0, num_items)).
      item_index: catalog indices (or item id strings) -> catalog indices.
      training: whether this is a training step (sources update their state only then).
    """

    features: dict[str, tf.Tensor]
    query: tf.Tensor
    positive_ids: tf.Tensor
    positive: tf.Tensor
    encode: Callable[[tf.Tensor], tf.Tensor]
    num_items: int
    item_index: Callable[[tf.Tensor], tf.Tensor]
    training: bool

    def ids_of(self, indices: tf.Tensor, valid: tf.Tensor | None = None) -> tf.Tensor:
        """`indices` as candidate ids: -1 where `valid` is False or the index is < 0."""
        indices = tf.cast(indices, tf.int64)
        keep = indices >= 0 if valid is None else tf.logical_and(valid, indices >= 0)
        return tf.where(keep, indices, tf.constant(-1, tf.int64))


@dataclasses.dataclass
class Candidates:
    """Negatives from one source, shared by the batch (`[n]`) or per row (`[batch_size, n]`).

    Attributes:
      name: the source's name (for metrics).
      group: the loss term it belongs to ("A", "B", "C" for UMA²'s spaces, else "other").
      ids: `[n]` or `[batch_size, n]` int64 catalog indices; -1 marks padding.
      embeddings: `[n, dim]` or `[batch_size, n, dim]`.
      log_q: same shape as ids or None: log of the item's expected count in a batch under
        this source's proposal, subtracted from its logit (logQ correction); None = none.
      log_propensity: same shape as ids or None: log of the item's exposure propensity,
        added to its logit while training (`trainer.exposure`); None = none.
      weight: same shape as ids (or `[batch_size, 1]`, one per row) or None: importance
        weight of each negative (IPW; `losses.share_denominator`).
      valid: same shape as ids or None: False for slots that are not real candidates.
      exclude_diagonal: shared candidates whose row i is batch row i's own positive
        (in-batch negatives), masked for that row.
    """

    name: str
    group: str
    ids: tf.Tensor
    embeddings: tf.Tensor
    log_q: tf.Tensor | None = None
    log_propensity: tf.Tensor | None = None
    weight: tf.Tensor | None = None
    valid: tf.Tensor | None = None
    exclude_diagonal: bool = False

    @property
    def shared(self) -> bool:
        return self.ids.shape.rank == 1
