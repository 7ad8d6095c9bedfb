"""ItemQueue: CLRec's fixed-size FIFO of items from earlier batches."""

from typing import Any

import tensorflow as tf

_ONLY_FIRST = tf.VariableAggregation.ONLY_FIRST_REPLICA
MODES = ("embeddings", "indices")


@tf.keras.utils.register_keras_serializable(package="twotower")
class ItemQueue(tf.keras.layers.Layer):
    """`num_queues` independent FIFO queues of `size` items each.

    Zhou et al., "Contrastive Learning for Debiased Candidate Generation in
    Large-Scale Recommender Systems" (KDD 2021): the items of earlier batches serve
    as negatives. In "embeddings" mode the queue caches float32 item embeddings
    `[size, dim]` (stop their gradient before enqueueing); in "indices" mode it caches
    int64 catalog indices `[size]` that the caller re-encodes with the current item
    tower each step, so gradients flow into the negatives (numbers: they live on the
    accelerator and all-gather as they are, where strings would not). Multi-CLRec's
    intention queues are `num_queues` > 1 with a queue index per enqueued row.

    Once a queue is full, each new item overwrites its oldest one. Reads return the
    queue oldest first; slots never written are padding (zeros or -1) and are
    marked invalid.

    State (`tf.Variable`s, not trainable, `ONLY_FIRST_REPLICA`): `values`
    `[num_queues * size, dim]` float32 or `[num_queues * size]` int64, and `count`
    `[num_queues]` int64, the number of items ever enqueued per queue (the write
    pointer is `count % size`). Under several replicas only the first replica's
    enqueue is kept, so enqueue the all-gathered batch.
    """

    def __init__(
        self,
        size: int,
        dim: int | None = None,
        mode: str = "embeddings",
        num_queues: int = 1,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if num_queues < 1:
            raise ValueError(f"num_queues must be positive, got {num_queues}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "embeddings" and (dim is None or dim < 1):
            raise ValueError(f"mode 'embeddings' needs a positive dim, got {dim}")
        self._size = size
        self._dim = dim if mode == "embeddings" else None
        self._mode = mode
        self._num_queues = num_queues
        slots = num_queues * size
        dtype, empty = {
            "embeddings": (tf.float32, 0.0),
            "indices": (tf.int64, -1),
        }[mode]
        self._values = self.add_weight(
            name="values",
            shape=[slots, dim] if mode == "embeddings" else [slots],
            dtype=dtype,
            initializer=tf.keras.initializers.Constant(empty),
            trainable=False,
            aggregation=_ONLY_FIRST,
        )
        self._count = self.add_weight(
            name="count",
            shape=[num_queues],
            dtype=tf.int64,
            initializer="zeros",
            trainable=False,
            aggregation=_ONLY_FIRST,
        )

    @property
    def count(self) -> tf.Variable:
        """`[num_queues]` int64: items ever enqueued into each queue."""
        return self._count

    def enqueue(
        self, values: tf.Tensor, queue_index: tf.Tensor | None = None, checked: bool = True
    ) -> None:
        """Appends a batch, overwriting the oldest items of full queues.

        Rows go to their queues in batch order; when a queue gets more than `size`
        rows at once, only its newest `size` rows are kept.

        Args:
          values: `[batch_size, dim]` embeddings, or `[batch_size]` catalog indices.
          queue_index: `[batch_size]` integer queue of each row, in
            [0, num_queues); None sends every row to queue 0.
          checked: whether to check `queue_index` is in range (an error if not).

        Raises:
          ValueError: `values` has the wrong rank or dim.
        """
        values = tf.convert_to_tensor(values)
        if self._mode == "embeddings":
            if values.shape.rank != 2 or values.shape[-1] not in (None, self._dim):
                raise ValueError(f"values must be [batch_size, {self._dim}], got {values.shape}")
            values = tf.cast(values, tf.float32)
        else:
            if values.shape.rank != 1:
                raise ValueError(f"indices must be [batch_size], got {values.shape}")
            if not values.dtype.is_integer:
                raise ValueError(f"indices must be integers, got {values.dtype.name}")
            values = tf.cast(values, tf.int64)
        batch_size = tf.shape(values, out_type=tf.int64)[0]
        checked = checked and queue_index is not None  # None: all rows to queue 0
        if queue_index is None:
            queue_index = tf.zeros([batch_size], tf.int64)
        queue_index = tf.cast(queue_index, tf.int64)
        if checked:
            # An Assert op runs on the host: a training step that computes its queues in
            # range by construction (argmax over the queues) passes checked=False.
            tf.debugging.assert_non_negative(queue_index, message="queue_index < 0")
            tf.debugging.assert_less(
                queue_index,
                tf.constant(self._num_queues, tf.int64),
                message="queue_index too large",
            )
        one_hot = tf.one_hot(queue_index, self._num_queues, dtype=tf.int64)
        # Position of each row among the rows sent to its queue in this batch.
        rank = tf.reduce_sum(tf.cumsum(one_hot, axis=0, exclusive=True) * one_hot, axis=1)
        added = tf.reduce_sum(one_hot, axis=0)
        keep = rank >= tf.gather(added, queue_index) - self._size
        slot = queue_index * self._size + (tf.gather(self._count, queue_index) + rank) % self._size
        self._values.scatter_update(
            tf.IndexedSlices(tf.boolean_mask(values, keep), tf.boolean_mask(slot, keep))
        )
        self._count.assign_add(added)

    def all_contents(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Every queue, oldest item first.

        Returns:
          values: `[num_queues, size, dim]` float32 or `[num_queues, size]` int64.
          valid: `[num_queues, size]` bool, False for slots never written (these
            come last).
        """
        return self._read(tf.range(self._num_queues, dtype=tf.int64))

    def contents(self, queue: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
        """One queue, oldest item first.

        Args:
          queue: which queue, in [0, num_queues).

        Returns:
          values: `[size, dim]` float32 or `[size]` int64.
          valid: `[size]` bool, False for slots never written (these come last).

        Raises:
          ValueError: `queue` is out of range.
        """
        if isinstance(queue, int) and not 0 <= queue < self._num_queues:
            raise ValueError(f"queue must be in [0, {self._num_queues}), got {queue}")
        values, valid = self._read(tf.reshape(tf.cast(queue, tf.int64), [1]))
        return values[0], valid[0]

    def _read(self, queues: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        count = tf.gather(self._count, queues)[:, tf.newaxis]
        start = tf.where(count >= self._size, count % self._size, 0)
        age = tf.range(self._size, dtype=tf.int64)[tf.newaxis, :]
        slots = queues[:, tf.newaxis] * self._size + (start + age) % self._size
        return tf.gather(self._values, slots), age < count

    def call(
        self,
        values: tf.Tensor,
        queue_index: tf.Tensor | None = None,
        training: bool | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns `all_contents()` as before this batch, then enqueues it when training.

        Args:
          values: `[batch_size, dim]` embeddings or `[batch_size]` indices.
          queue_index: `[batch_size]` integer queue of each row, or None.
          training: whether to enqueue `values`.

        Returns:
          `all_contents()` from before the enqueue.
        """
        contents = self.all_contents()
        if training:
            self.enqueue(values, queue_index)
        return contents

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "size": self._size,
            "dim": self._dim,
            "mode": self._mode,
            "num_queues": self._num_queues,
        }
