"""InBatchNegatives: the other rows' positives, with a logQ correction."""

import json
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.negatives.candidates import Batch, Candidates, by_index, catalog_table
from trainer.negatives.queue import gather_across_replicas
from trainer.negatives.source import NegativeSource

CORRECTIONS = ("none", "static", "streaming")


def click_shares(item_probabilities: dict[str, float], catalog: list[str]) -> tf.Tensor:
    """`[num_items + 1]` each catalog item's share of the training clicks, by catalog
    index + 1 (row 0: padding or no catalog item). An item never clicked gets the
    smallest share (as rare as the rarest), never 0, so log q stays finite."""
    floor = min(float(v) for v in item_probabilities.values())
    shares = np.full(len(catalog) + 1, floor, np.float32)
    shares[1:] = [float(item_probabilities.get(item, floor)) for item in catalog]
    with tf.init_scope():
        return tf.constant(shares)


@tf.keras.utils.register_keras_serializable(package="twotower")
class InBatchNegatives(NegativeSource):
    """Every other row's clicked item is a negative (YouTube, RecSys 2019).

    In-batch items are drawn in proportion to their click frequency, so without a
    correction popular items are over-punished. `correction`:
      "none": none (plain in-batch softmax);
      "static": expected count = batch_size × the item's share of training clicks
        (`item_probabilities`, from the dataset's item_frequency.tsv);
      "streaming": the streaming frequency estimate of Yi et al. (Algorithm 2), 1/B_j,
        updated every training step.

    Under several replicas the streaming estimator always counts the global batch.
    `cross_replica` makes the candidates the global batch's positives too (all-gathered,
    gradients flow back to the replica that encoded them), as one worker with the
    global batch would see them; otherwise each replica uses its own rows.
    """

    def __init__(
        self,
        correction: str = "static",
        item_probabilities: dict[str, float] | None = None,
        frequency_buckets: int = 1_000_003,
        frequency_alpha: float = 0.01,
        cross_replica: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
        if correction == "static" and not item_probabilities:
            raise ValueError("correction='static' needs item_probabilities")
        self._correction = correction
        # A JSON string, not a dict: Keras walks the Python containers a layer holds at
        # every step, and this one is catalog-sized.
        self._item_probabilities = json.dumps(dict(item_probabilities or {}))
        self._frequency_buckets = frequency_buckets
        self._frequency_alpha = frequency_alpha
        self._cross_replica = cross_replica
        self.corrected = correction != "none"
        self._shares = None  # by catalog index, made by `bind`
        self._buckets = None  # the estimator's bucket of each catalog index, by `bind`
        self._estimator = None
        if correction == "streaming":
            from trainer.negatives.frequency_estimator import (  # noqa: PLC0415
                StreamingFrequencyEstimator,
            )

            self._estimator = StreamingFrequencyEstimator(
                num_buckets=frequency_buckets, alpha=frequency_alpha, name="frequency"
            )

    def bind(self, candidate_tower: tf.keras.Model) -> None:
        """Tables by catalog index: each item's click share, or its estimator bucket
        (the bucket of its id string, as `StreamingFrequencyEstimator.bucket` hashes it,
        computed once here instead of hashing strings every step)."""
        catalog = candidate_tower.catalog
        if self._correction == "static":
            self._shares = click_shares(json.loads(self._item_probabilities), catalog)
        elif self._estimator is not None:
            self._buckets = catalog_table(catalog, self._estimator.bucket)

    def _candidates(self, values: tf.Tensor) -> tf.Tensor:
        if not self._cross_replica:
            return values
        gathered = gather_across_replicas(values)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return gathered
        # This replica's rows first: the diagonal stays each row's own positive.
        shift = tf.cast(context.replica_id_in_sync_group, tf.int32) * tf.shape(values)[0]
        return tf.roll(gathered, -shift, axis=0)

    def sample(self, batch: Batch) -> Candidates:
        return Candidates(
            name=self.name,
            group="other",
            ids=self._candidates(batch.positive_ids),
            embeddings=self._candidates(batch.positive),
            exclude_diagonal=True,
        )

    def expected_count(self, ids: tf.Tensor, batch: Batch) -> tf.Tensor:
        local = tf.cast(tf.shape(batch.positive_ids)[0], tf.float32)
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        if self._shares is not None:
            size = local * replicas if self._cross_replica else local
            return by_index(self._shares, ids) * size
        # The estimator counts global batches; a replica's own rows are 1/replicas of one.
        share = 1.0 if self._cross_replica else 1.0 / replicas
        return self._estimator.bucket_probability(by_index(self._buckets, ids)) * share

    def update(self, batch: Batch) -> None:
        if self._estimator is not None:
            positives = gather_across_replicas(batch.positive_ids)
            self._estimator.update_buckets(by_index(self._buckets, positives))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "correction": self._correction,
            "item_probabilities": json.loads(self._item_probabilities),
            "frequency_buckets": self._frequency_buckets,
            "frequency_alpha": self._frequency_alpha,
            "cross_replica": self._cross_replica,
        }
