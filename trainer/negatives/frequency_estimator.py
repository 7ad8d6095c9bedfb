"""StreamingFrequencyEstimator: how often an item shows up in a training step.

Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations" (RecSys 2019), Algorithm 2, for the logQ correction of in-batch
softmax.
"""

import math
from typing import Any

import tensorflow as tf

_ONLY_FIRST = tf.VariableAggregation.ONLY_FIRST_REPLICA


@tf.keras.utils.register_keras_serializable(package="twotower")
class StreamingFrequencyEstimator(tf.keras.layers.Layer):
    """Estimates the probability that an item appears in a batch, from the stream.

    Items are hashed into `num_buckets` buckets. Per bucket h the layer keeps A[h],
    the last step h was seen, and B[h], a moving average of the number of steps
    between two sightings; `probability` is 1 / B[h]. At step t, for every distinct
    bucket h of the batch: B[h] <- (1 - w) * B[h] + w * (t - A[h]); A[h] <- t; then
    t <- t + 1. A bucket counts once per step however often its items repeat in
    the batch.

    The paper uses w = alpha throughout, from B = 0, which biases B toward 0 for
    the first ~1/alpha sightings of every item. Here the n-th observed gap gets
    w = max(alpha, 1 / n): B is the exact mean of the first 1/alpha gaps, then the
    paper's moving average, so new items are right after a few sightings.

    A bucket with no observed gap yet (never seen, or seen once) gets
    B = max(t, 1), t the number of steps so far: "at most once in t steps". So
    `probability` is always in (0, 1], never inf or nan.

    State (`tf.Variable`s, not trainable, `ONLY_FIRST_REPLICA`): `last_step` int64
    [num_buckets] (-1 = never seen), `mean_gap` float32 [num_buckets] (0 = no gap
    yet), `gap_count` int64 [num_buckets] (capped at ceil(1/alpha)), `step` int64.
    Under several replicas only the first replica's update is kept, so feed
    `update` the all-gathered batch.
    """

    def __init__(self, num_buckets: int = 1_000_003, alpha: float = 0.01, **kwargs: Any):
        super().__init__(**kwargs)
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be positive, got {num_buckets}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self._num_buckets = num_buckets
        self._alpha = alpha
        self._max_count = math.ceil(1.0 / alpha)
        self._last_step = self._state("last_step", [num_buckets], tf.int64, -1)
        self._mean_gap = self._state("mean_gap", [num_buckets], tf.float32, 0)
        self._gap_count = self._state("gap_count", [num_buckets], tf.int64, 0)
        self._step = self._state("step", [], tf.int64, 0)

    def _state(self, name: str, shape: list[int], dtype: tf.DType, value: int) -> tf.Variable:
        return self.add_weight(
            name=name,
            shape=shape,
            dtype=dtype,
            initializer=tf.keras.initializers.Constant(value),
            trainable=False,
            aggregation=_ONLY_FIRST,
        )

    @property
    def step(self) -> tf.Variable:
        """Scalar int64: the number of `update` calls so far."""
        return self._step

    def bucket(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Hash buckets of item ids (strings; integers are hashed as their decimal text).

        Args:
          item_ids: `[batch_size]` string or integer ids.

        Returns:
          `[batch_size]` int64 buckets in [0, num_buckets).
        """
        item_ids = tf.convert_to_tensor(item_ids)
        if item_ids.dtype != tf.string:
            item_ids = tf.strings.as_string(item_ids)
        return tf.strings.to_hash_bucket_fast(item_ids, self._num_buckets)

    def update(self, item_ids: tf.Tensor) -> None:
        """Records one training step in which `item_ids` appeared.

        Args:
          item_ids: `[batch_size]` string or integer ids of the step's items
            (duplicates count once).
        """
        self.update_buckets(self.bucket(item_ids))

    def update_buckets(self, buckets: tf.Tensor) -> None:
        """`update` of items given by their buckets (`bucket`), e.g. looked up once."""
        buckets, _ = tf.unique(tf.reshape(tf.cast(buckets, tf.int64), [-1]))
        step = tf.identity(self._step)
        last = tf.gather(self._last_step, buckets)
        seen = last >= 0
        count = tf.gather(self._gap_count, buckets)
        count = tf.where(seen, tf.minimum(count + 1, self._max_count), count)
        weight = tf.maximum(self._alpha, 1.0 / tf.cast(tf.maximum(count, 1), tf.float32))
        gap = tf.cast(step - last, tf.float32)
        old = tf.gather(self._mean_gap, buckets)
        mean_gap = tf.where(seen, (1.0 - weight) * old + weight * gap, old)
        self._mean_gap.scatter_update(tf.IndexedSlices(mean_gap, buckets))
        self._gap_count.scatter_update(tf.IndexedSlices(count, buckets))
        self._last_step.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(buckets), step), buckets))
        self._step.assign_add(1)

    def _mean_gap_of(self, buckets: tf.Tensor) -> tf.Tensor:
        gap = tf.gather(self._mean_gap, buckets)
        steps = tf.cast(tf.maximum(self._step, 1), tf.float32)
        return tf.where(gap > 0.0, gap, steps)

    def probability(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Estimated probability that each item appears in one step's batch.

        Args:
          item_ids: `[batch_size]` string or integer ids.

        Returns:
          `[batch_size]` float32 in (0, 1]: 1 / B[h], or 1 / max(steps so far, 1)
          for a bucket with no observed gap.
        """
        return self.bucket_probability(self.bucket(item_ids))

    def bucket_probability(self, buckets: tf.Tensor) -> tf.Tensor:
        """`probability` of items given by their buckets (`bucket`)."""
        return 1.0 / self._mean_gap_of(buckets)

    def call(self, item_ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Returns `probability(item_ids)`, after `update(item_ids)` when training.

        Args:
          item_ids: `[batch_size]` string or integer ids.
          training: whether to record this batch as a training step first.

        Returns:
          `[batch_size]` float32 probabilities.
        """
        if training:
            self.update(item_ids)
        return self.probability(item_ids)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_buckets": self._num_buckets, "alpha": self._alpha}
