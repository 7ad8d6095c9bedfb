"""CorpusNegatives: items drawn uniformly from the whole catalog."""

from typing import Any

import tensorflow as tf

from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.draws import draw_seed, step_counter, uniform_indices
from trainer.negatives.source import NegativeSource


@tf.keras.utils.register_keras_serializable(package="twotower")
class CorpusNegatives(NegativeSource):
    """`count` items uniform over the catalog, shared by the batch or drawn per row.

    Shared and corrected: the corpus half of Mixed Negative Sampling (Yang et al. 2020),
    expected count `count / num_items` per item, combined with the in-batch proposal.
    Per row, group "C": UMA²'s Space C (entire space, not recalled), uncorrected; the
    row's own positive is masked (accidental hit), never used as its negative.

    Per row with a `pool`: the batch draws `pool` catalog items, encodes them once, and
    each row draws its `count` from the pool. Each draw is still uniform over the
    catalog (a uniform pick of a uniform draw), rows share items, and the item tower
    and the sparse updates see at most `pool` items a step instead of batch x count.

    The draws are stateless, from `seed`, the source's name and its step
    (`trainer.negatives.draws`): each replica draws its own, and a resumed run
    continues the stream.
    """

    def __init__(
        self,
        count: int,
        per_row: bool = False,
        group: str = "other",
        corrected: bool = False,
        pool: int = 0,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(count=count, **kwargs)
        if pool and not per_row:
            raise ValueError("a pool is for per-row draws; shared draws are a pool already")
        self._per_row = per_row
        self._group = group
        self.corrected = corrected
        self._pool = pool
        self._seed = seed
        self._step = step_counter()

    def sample(self, batch: Batch) -> Candidates:
        seed = draw_seed(self._seed, self._step, self.name)
        if self._pool:
            return self._sample_from_pool(batch, seed)
        shape = [tf.shape(batch.positive_ids)[0], self._count] if self._per_row else [self._count]
        indices = uniform_indices(shape, batch.num_items, seed)
        return Candidates(
            name=self.name, group=self._group, ids=indices, embeddings=batch.encode(indices)
        )

    def _sample_from_pool(self, batch: Batch, seed: tf.Tensor) -> Candidates:
        pool_seed, pick_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        pool = uniform_indices([self._pool], batch.num_items, pool_seed)
        shape = [tf.shape(batch.positive_ids)[0], self._count]
        picks = uniform_indices(shape, self._pool, pick_seed)
        return Candidates(
            name=self.name,
            group=self._group,
            ids=tf.gather(pool, picks),
            embeddings=tf.gather(batch.encode(pool), picks),
        )

    def update(self, batch: Batch) -> None:
        self._step.assign_add(1)

    def expected_count(self, ids: tf.Tensor, batch: Batch) -> tf.Tensor:
        return tf.fill(tf.shape(ids), self._count / batch.num_items)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "per_row": self._per_row,
            "group": self._group,
            "corrected": self.corrected,
            "pool": self._pool,
            "seed": self._seed,
        }
