"""The negative sources' state and draws under a two-replica MirroredStrategy (two
logical CPUs).

Logical devices must be set before TensorFlow starts, so this runs in a subprocess.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json
import twotower  # noqa: F401
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from trainer.negatives.candidates import Batch
from trainer.negatives.cluster_pool import ClusterPool
from trainer.negatives.corpus import CorpusNegatives
from trainer.negatives.frequency_estimator import StreamingFrequencyEstimator
from trainer.negatives.item_queue import ItemQueue
from trainer.negatives.queue import gather_across_replicas
from tests.id_dropout_tower import mask_tower

strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
with strategy.scope():
    estimator = StreamingFrequencyEstimator(num_buckets=101)
    queue = ItemQueue(4, dim=2, num_queues=2)
    index_queue = ItemQueue(4, mode="indices")
    pool = ClusterPool(num_items=6, num_clusters=2, max_pool_size=4)
    corpus = CorpusNegatives(6, per_row=True, group="C", seed=3, name="space_c")
    tower = mask_tower(6, dim=64)
pool.assign(np.array([0, 1, 0, 1, 0, 1]))  # cross-replica context, e.g. from a callback


def per_replica(context):
    replica = context.replica_id_in_sync_group
    return tf.constant([["a"], ["b"]])[replica], tf.constant([[[1.0, 1.0]], [[2.0, 2.0]]])[replica]


ids, embeddings = strategy.experimental_distribute_values_from_function(per_replica)


def batch():
    # Two rows per replica over a catalog of 10,000 (an embedding: the index, twice).
    encode = lambda i: tf.stack([tf.cast(i, tf.float32)] * 2, axis=-1)
    rows = tf.constant([0, 1], tf.int64)
    return Batch({}, tf.ones([2, 2]), rows, encode(rows), encode, 10_000, lambda i: i, True)


def corpus_step():  # as a training step: the draws, then the update after the loss
    draws = corpus.sample(batch()).ids
    corpus.update(batch())
    return draws


@tf.function
def train_step(ids, embeddings):
    def step_fn(ids, embeddings):
        estimator.update(ids)
        queue.enqueue(embeddings, queue_index=tf.constant([1]))
        # Each replica's item index, all-gathered as numbers (collectives take no strings).
        index_queue.enqueue(gather_across_replicas(tf.where(ids == "a", 0, 1)))
        return pool.sample(tf.constant([0, 1]), 3, 1, seed=tf.constant([1, 2])), corpus_step()

    return strategy.run(step_fn, args=(ids, embeddings))


draws, corpus_first = train_step(ids, embeddings)
corpus_second = tf.function(lambda: strategy.run(corpus_step))()
# The item id dropout's masks: an encoded item is ones where its id was kept, zeros
# where it was hidden.
masks = tf.function(
    lambda: strategy.run(lambda: tower.encode_indices(tf.range(6, dtype=tf.int64), True))
)()
alone = CorpusNegatives(6, per_row=True, group="C", seed=3, name="space_c")  # no strategy
alone_first = alone.sample(batch()).ids
local = lambda values: [v.numpy().tolist() for v in strategy.experimental_local_results(values)]
copies = lambda variable: [v.numpy().tolist() for v in variable.values]
buckets = estimator.bucket(tf.constant(["a", "b"]))
print(json.dumps({
    "draws": local(draws),
    "corpus": [local(corpus_first), local(corpus_second)],
    "corpus_alone": alone_first.numpy().tolist(),
    "corpus_step": copies(corpus._step),
    "masks": [v[:, 0].numpy().tolist() for v in strategy.experimental_local_results(masks)],
    "mask_draws": copies(tower._dropout_draws),
    "step": copies(estimator.step),
    "last_step": [tf.gather(v, buckets).numpy().tolist() for v in estimator._last_step.values],
    "queue": copies(queue._values),
    "count": copies(queue.count),
    "indices": copies(index_queue._values),
    "cluster_of": copies(pool._cluster_of),
}))
"""


@pytest.fixture(scope="module")
def mirrored() -> dict:
    """The script's JSON: each replica's copy of every state and its draws."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_first_replica_update_is_kept_on_every_replica(mirrored):
    out = mirrored
    # Replica 0 saw "a" / [1, 1], replica 1 saw "b" / [2, 2]: both copies keep replica 0's.
    assert out["step"] == [1, 1]
    assert out["last_step"] == [[0, -1], [0, -1]]
    queue_1 = [[0.0, 0.0]] * 4 + [[1.0, 1.0]] + [[0.0, 0.0]] * 3  # queue 1 starts at row 4
    assert out["queue"] == [queue_1, queue_1]
    assert out["count"] == [[0, 1], [0, 1]]
    # Both replicas' indices (0 from replica 0, 1 from replica 1), kept on both copies.
    assert out["indices"] == [[0, 1, -1, -1], [0, 1, -1, -1]]
    assert out["cluster_of"] == [[0, 1, 0, 1, 0, 1]] * 2
    # Item 0's pool is {0, 2, 4}, item 1's {1, 3, 5}: cluster draws skip the positive.
    for replica_draws in out["draws"]:
        assert set(replica_draws[0][:3]) <= {2, 4} and set(replica_draws[1][:3]) <= {3, 5}


def test_each_replica_draws_its_own_negatives_from_a_resumable_step(mirrored):
    first, second = mirrored["corpus"]
    # Replica 0 draws what one process draws; replica 1 its own stream (a plain global
    # seed gave every worker the same negatives).
    assert first[0] == mirrored["corpus_alone"]
    assert first[1] != first[0]
    assert all(len(row) == 6 and all(0 <= i < 10_000 for i in row) for row in first[1])
    # The step (the seed's other half) moved on once, on both copies: new draws.
    assert mirrored["corpus_step"] == [2, 2]
    assert second[0] != first[0] and second[1] != first[1] and second[0] != second[1]


def test_each_replica_masks_its_own_item_ids(mirrored):
    # The item tower's id dropout (DropoutNet), seeded as the sampled negatives are: a
    # plain global seed gave every worker the same masks.
    first, second = mirrored["masks"]
    assert set(first) | set(second) <= {0.0, 1.0}
    assert first != second
    assert mirrored["mask_draws"] == [1, 1]
