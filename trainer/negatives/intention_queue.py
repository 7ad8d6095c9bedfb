"""IntentionQueueNegatives: Multi-CLRec's intention queues and user intention vectors."""

from typing import Any

import tensorflow as tf

from trainer import losses
from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.item_queue import ItemQueue
from trainer.negatives.momentum_queue import MomentumQueueNegatives
from trainer.negatives.queue import gather_across_replicas
from trainer.negatives.source import NegativeSource

MODES = ("ids", "embeddings", "momentum")


@tf.keras.utils.register_keras_serializable(package="twotower")
class IntentionQueueNegatives(NegativeSource):
    """H intention queues and H user intention vectors (Multi-CLRec, Zhou et al. 2021).

    An item's intention is the prototype its category (cluster) embedding is closest to:
    `argmax_h <c_h, stop_gradient(category_embedding(item))>`, with H fixed random
    prototypes, so items of related categories share a queue as category embeddings
    train. Each user has H intention vectors `u_h = W_h u` (trainable projections of the
    query embedding). For a click on an item of intention h, the source adds its own
    contrastive loss: `u_h · v⁺` against the items of queue h (same intention, harder than
    the main queue), uncorrected like CLRec's queue. The queue holds ids re-encoded each
    step (`mode="ids"`), cached embeddings (`mode="embeddings"`, cheaper, and unstable on
    MovieLens-100K; see docs/negatives.md), or embeddings cached from the main momentum
    queue's copy of the item tower (`mode="momentum"`, MoCo-style like that queue: the
    positive is scored by the same copy, so positive and negatives come from one encoder;
    `follow` names the momentum source). It adds no candidates to the shared loss.
    """

    def __init__(
        self,
        intentions: int,
        size: int,
        dim: int,
        category_dim: int,
        mode: str = "ids",
        temperature: float = 1.0,
        cosine: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(count=size, **kwargs)
        if intentions < 1:
            raise ValueError(f"intentions must be positive, got {intentions}")
        self._intentions = intentions
        self._dim = dim
        self._category_dim = category_dim
        self._mode = mode
        self._temperature = temperature
        self._cosine = cosine
        self._seed = seed
        self._prototypes = tf.constant(
            tf.random.stateless_normal([intentions, category_dim], seed=[seed, 7])
        )
        self._indices = ItemQueue(size, mode="indices", num_queues=intentions, name="indices")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self._embeddings = (
            ItemQueue(size, dim, num_queues=intentions, name="embeddings")
            if mode in ("embeddings", "momentum")
            else None
        )
        self._momentum = None  # mode "momentum": the main queue's source, set by `follow`
        self._projections = [
            tf.keras.layers.Dense(dim, use_bias=False, name=f"intention_{h}")
            for h in range(intentions)
        ]
        self.category_embedding = None  # set by `bind`: ids -> [.., category_dim]

    @property
    def mode(self) -> str:
        return self._mode

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def follow(self, momentum: MomentumQueueNegatives) -> None:
        """Mode "momentum": score and enqueue the positives as `momentum` (the main queue,
        whose `extra_loss` runs first in the step) encodes them. Not tracked: the source
        and its tower belong to the model."""
        if self._mode != "momentum":
            raise ValueError(f"{self.name}: only a momentum-mode queue follows one")
        self._momentum = momentum

    def _positives(self, batch: Batch) -> tf.Tensor:
        """The positives the loss scores and the cached queues keep: the momentum
        tower's in mode "momentum", the trained tower's otherwise."""
        if self._mode != "momentum":
            return batch.positive
        if self._momentum is None:
            raise ValueError(f"{self.name}: mode 'momentum' needs `follow(momentum source)`")
        return self._momentum.encoded_positives

    @property
    def num_intentions(self) -> int:
        return self._intentions

    @property
    def projections(self) -> list[tf.keras.layers.Dense]:
        """The H projections `W_h` of `intention_vectors`."""
        return list(self._projections)

    def bind(self, candidate_tower: tf.keras.Model) -> None:
        self.category_embedding = candidate_tower.category_embedding

    def intention(self, item_ids: tf.Tensor) -> tf.Tensor:
        """`[batch]` int64 intention of each item."""
        category = tf.stop_gradient(self.category_embedding(item_ids))
        return tf.argmax(tf.matmul(category, self._prototypes, transpose_b=True), axis=1)

    def intention_vectors(self, query: tf.Tensor) -> tf.Tensor:
        """`[batch, H, dim]` user intention vectors."""
        vectors = tf.stack([projection(query) for projection in self._projections], axis=1)
        return tf.math.l2_normalize(vectors, axis=-1) if self._cosine else vectors

    def sample(self, batch: Batch) -> None:
        return None

    def extra_loss(self, batch: Batch) -> tf.Tensor:
        which = self.intention(batch.positive_ids)
        user = tf.gather(self.intention_vectors(batch.query), which, batch_dims=1)  # [B, d]
        all_indices, all_valid = self._indices.all_contents()  # [H, size]
        if self._embeddings is not None:
            all_negatives = self._embeddings.all_contents()[0]
        else:  # each queue item is encoded once, then shared by the rows of its intention
            all_negatives = batch.encode(all_indices)
        positive = self._positives(batch)
        own = tf.cast(batch.item_index(batch.positive_ids), tf.int64)
        # Each intention's rows against its own queue only: [B_h, size] scores per
        # intention, B × size in all (scoring every row against every queue and keeping
        # its own was H times that; gathering each row's queue, a [B, size, dim] copy).
        rows = tf.dynamic_partition(
            tf.range(tf.shape(own)[0]), tf.cast(which, tf.int32), self._intentions
        )
        total = tf.constant(0.0)
        for h, part in enumerate(rows):
            queue = Candidates(
                self.name, "other", all_indices[h], all_negatives[h], valid=all_valid[h]
            )
            per_row = losses.softmax_loss(
                tf.gather(user, part),
                tf.gather(positive, part),
                tf.gather(own, part),
                None,
                [queue],
                temperature=self._temperature,
            )
            total += tf.reduce_sum(per_row)
        return total

    def update(self, batch: Batch) -> None:
        indices = gather_across_replicas(tf.cast(batch.item_index(batch.positive_ids), tf.int64))
        which = self.intention(batch.ids_of(indices))
        # `which` is an argmax over the H queues: in range, no host-side check.
        self._indices.enqueue(indices, which, checked=False)
        if self._embeddings is not None:
            self._embeddings.enqueue(
                gather_across_replicas(tf.stop_gradient(self._positives(batch))),
                which,
                checked=False,
            )

    def get_config(self) -> dict[str, Any]:
        config = {
            **super().get_config(),
            "intentions": self._intentions,
            "size": self._count,
            "dim": self._dim,
            "category_dim": self._category_dim,
            "mode": self._mode,
            "temperature": self._temperature,
            "cosine": self._cosine,
            "seed": self._seed,
        }
        config.pop("count")
        return config
