"""The seeds of the negative sources' random draws: one per source, step and replica.

Every sampled source draws with stateless ops from its seed, its name and its step, the
step a variable saved with the model. So a run's draws are repeatable, a resumed run
continues them where the backup left off (stateful ops would start their stream again),
two sources of one model draw apart, and the replicas draw independently: under
MultiWorkerMirroredStrategy every worker sets the same global seed, and stateful ops
would give every worker the same negatives.
"""

import zlib
from typing import Any

import tensorflow as tf


def step_counter(name: str = "step") -> tf.Variable:
    """A source's step count: every replica adds 1 a step and the first replica's count
    is kept (it stays the same on all replicas)."""
    return tf.Variable(
        0,
        dtype=tf.int64,
        trainable=False,
        name=name,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )


def replica_id() -> tf.Tensor:
    """This replica's id among all workers' replicas (MultiWorkerMirroredStrategy counts
    them over the cluster; 0 outside a strategy)."""
    context = tf.distribute.get_replica_context()
    return tf.cast(0 if context is None else context.replica_id_in_sync_group, tf.int64)


def draw_seed(seed: int, step: tf.Tensor | tf.Variable, stream: str) -> tf.Tensor:
    """The `[2]` int64 seed of the draws of `stream` (a source's name) at `step`, on this
    replica: `[seed, step]` with the stream's and the replica's ids folded in."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    key = tf.random.experimental.stateless_fold_in(key, zlib.crc32(stream.encode()))
    return tf.random.experimental.stateless_fold_in(key, replica_id())


def uniform_indices(shape: list[Any], maxval: int | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """int64 indices uniform over [0, maxval), drawn from `seed` (a `draw_seed`)."""
    draws = tf.random.stateless_uniform(shape, seed, minval=0, maxval=maxval, dtype=tf.int32)
    return tf.cast(draws, tf.int64)
