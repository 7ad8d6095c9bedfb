"""QueueNegatives: CLRec's FIFO queue of items from earlier batches."""

from typing import Any

import tensorflow as tf

from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.item_queue import ItemQueue
from trainer.negatives.source import NegativeSource


def gather_across_replicas(values: tf.Tensor) -> tf.Tensor:
    """The global batch's rows under several replicas (so every replica enqueues the same
    items and holds the same queue); the local batch otherwise."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    if values.dtype != tf.string:
        # identity: made in the replica's function, so placed on its device. A tensor
        # straight from the distributed input (the ids the input pipeline looked up)
        # has no device there, and the gather then has no destination
        # ("destinations can not be empty", MultiWorkerMirroredStrategy, TF 2.20).
        return context.all_gather(tf.identity(values), axis=0)
    # Collective all-gathers (MultiWorkerMirroredStrategy) take numbers only: send each
    # id's bytes, padded to the longest id of the global batch, and join them back.
    chars = tf.strings.bytes_split(values)
    codes = chars.with_flat_values(
        tf.cast(tf.reshape(tf.io.decode_raw(chars.flat_values, tf.uint8), [-1]), tf.int32)
    )
    lengths = context.all_gather(codes.row_lengths(), axis=0)
    width = tf.reduce_max(tf.concat([lengths, [0]], 0))
    dense = codes.to_tensor(0, shape=tf.stack([tf.shape(values, out_type=tf.int64)[0], width]))
    gathered = tf.RaggedTensor.from_tensor(context.all_gather(dense, axis=0), lengths=lengths)
    byte = tf.constant([bytes([i]) for i in range(256)])
    return tf.strings.reduce_join(
        gathered.with_flat_values(tf.gather(byte, gathered.flat_values)), axis=1
    )


@tf.keras.utils.register_keras_serializable(package="twotower")
class QueueNegatives(NegativeSource):
    """The last `size` clicked items of earlier batches (Zhou et al., KDD 2021).

    No logQ correction: the contrastive loss over the queue is itself the inverse
    propensity estimator (CLRec). `mode`:
      "embeddings": cached item embeddings, no gradient to the negatives (cheapest);
      "ids": the items re-encoded every step, gradients flow (the reference code).
    The queue holds int64 catalog indices (all-gathered as numbers, re-encoded without
    strings, and used to mask accidental hits).
    """

    def __init__(self, size: int, dim: int, mode: str = "embeddings", **kwargs: Any):
        super().__init__(count=size, **kwargs)
        self._dim = dim
        self._mode = mode
        self._indices = ItemQueue(size, mode="indices", name="indices")
        self._embeddings = (
            ItemQueue(size, dim, mode="embeddings", name="embeddings")
            if mode == "embeddings"
            else None
        )

    def sample(self, batch: Batch) -> Candidates:
        indices, valid = self._indices.contents(0)
        if self._embeddings is not None:
            embeddings = self._embeddings.contents(0)[0]
        else:
            embeddings = batch.encode(indices)
        return Candidates(self.name, "other", batch.ids_of(indices, valid), embeddings, valid=valid)

    def update(self, batch: Batch) -> None:
        indices = tf.cast(batch.item_index(batch.positive_ids), tf.int64)
        self._indices.enqueue(gather_across_replicas(indices))
        if self._embeddings is not None:
            positive = tf.stop_gradient(batch.positive)
            self._embeddings.enqueue(gather_across_replicas(positive))

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "size": self._count, "dim": self._dim, "mode": self._mode}
        config.pop("count")
        return config
