"""Two real MultiWorkerMirroredStrategy workers draw their own sampled negatives and
their own id dropout masks.

Every worker sets the same global seed, so stateful draws gave them the same negatives;
the sources' stateless seeds fold in the replica's id, which counts over the cluster.
"""

import json
import os
import subprocess
import sys

from distributed_workers import ROOT, tf_config

from twotower.bench.distributed import free_ports

SCRIPT = r"""
import json
import twotower  # noqa: F401
import tensorflow as tf

tf.keras.utils.set_random_seed(3)  # as `train` does: the same on every worker
strategy = tf.distribute.MultiWorkerMirroredStrategy()
from trainer.negatives.candidates import Batch
from trainer.negatives.corpus import CorpusNegatives
from tests.id_dropout_tower import mask_tower

with strategy.scope():
    source = CorpusNegatives(6, per_row=True, group="C", seed=3, name="space_c")
    tower = mask_tower(64)  # an encoded item: ones where its id was kept, zeros if hidden


def batch():  # two rows per worker over a catalog of 10,000
    encode = lambda i: tf.stack([tf.cast(i, tf.float32)] * 2, axis=-1)
    rows = tf.constant([0, 1], tf.int64)
    return Batch({}, tf.ones([2, 2]), rows, encode(rows), encode, 10_000, lambda i: i, True)


@tf.function
def step():
    def step_fn():
        draws = source.sample(batch()).ids
        source.update(batch())
        return draws

    return strategy.run(step_fn)


first, second = step(), step()
local = lambda values: strategy.experimental_local_results(values)[0].numpy().tolist()
step_count = int(source._step.numpy())
masks = tf.function(
    lambda: strategy.run(lambda: tower.encode_indices(tf.range(64, dtype=tf.int64), True)[:, 0])
)()
print(json.dumps({
    "first": local(first), "second": local(second), "step": step_count, "masks": local(masks)
}))
"""


def test_each_worker_draws_its_own_negatives():
    ports = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update({"PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"})
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            cwd=ROOT,
            env={**env, "TF_CONFIG": tf_config(ports, i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    zero, one = outs
    assert zero["step"] == one["step"] == 2
    assert zero["first"] != one["first"] and zero["second"] != one["second"]
    assert zero["first"] != zero["second"] and one["first"] != one["second"]
    assert all(0 <= i < 10_000 for draws in outs for row in draws["first"] for i in row)
    # The item tower's id dropout: each worker hides its own items' ids (a stateful draw
    # hid the same ones on every worker).
    assert set(zero["masks"]) | set(one["masks"]) == {0.0, 1.0}
    assert zero["masks"] != one["masks"]
