"""IntentionQueueNegatives: Multi-CLRec's per-intention queues."""

from typing import Any

import tensorflow as tf

from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.item_queue import ItemQueue
from trainer.negatives.queue import gather_across_replicas
from trainer.negatives.source import NegativeSource


@tf.keras.utils.register_keras_serializable(package="twotower")
class IntentionQueueNegatives(NegativeSource):
    """H intention queues beside CLRec's main queue (Multi-CLRec, Zhou et al. 2021).

    An item's intention is the prototype its category (cluster) embedding is closest to:
    `argmax_h <c_h, stop_gradient(category_embedding(item))>`, with H fixed random
    prototypes, so items of related categories share a queue as category embeddings
    train. A clicked item is enqueued into its intention's queue; each row's negatives
    are the queue of its positive's intention: same-intention, harder than the main
    queue. Cached embeddings, no correction (as the main queue).
    """

    def __init__(
        self, intentions: int, size: int, dim: int, category_dim: int, seed: int = 0, **kwargs: Any
    ):
        super().__init__(count=size, **kwargs)
        if intentions < 1:
            raise ValueError(f"intentions must be positive, got {intentions}")
        self._intentions = intentions
        self._dim = dim
        self._category_dim = category_dim
        self._seed = seed
        self._prototypes = tf.constant(
            tf.random.stateless_normal([intentions, category_dim], seed=[seed, 7])
        )
        self._ids = ItemQueue(size, mode="ids", num_queues=intentions, name="ids")
        self._embeddings = ItemQueue(size, dim, num_queues=intentions, name="embeddings")
        self.category_embedding = None  # set by the model builder: ids -> [.., category_dim]

    def intention(self, item_ids: tf.Tensor) -> tf.Tensor:
        """`[batch]` int64 intention of each item."""
        category = tf.stop_gradient(self.category_embedding(item_ids))
        return tf.argmax(tf.matmul(category, self._prototypes, transpose_b=True), axis=1)

    def sample(self, batch: Batch) -> Candidates:
        which = self.intention(batch.positive_ids)
        ids, valid = self._ids.all_contents()
        embeddings, _ = self._embeddings.all_contents()
        return Candidates(
            self.name,
            "other",
            tf.gather(ids, which),
            tf.gather(embeddings, which),
            valid=tf.gather(valid, which),
        )

    def update(self, batch: Batch) -> None:
        ids = gather_across_replicas(batch.positive_ids)
        positive = gather_across_replicas(tf.stop_gradient(batch.positive))
        which = self.intention(ids)
        self._ids.enqueue(ids, which)
        self._embeddings.enqueue(positive, which)

    def get_config(self) -> dict[str, Any]:
        config = {
            **super().get_config(),
            "intentions": self._intentions,
            "size": self._count,
            "dim": self._dim,
            "category_dim": self._category_dim,
            "seed": self._seed,
        }
        config.pop("count")
        return config
