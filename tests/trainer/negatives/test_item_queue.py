import numpy as np
import pytest
import tensorflow as tf

from trainer.negatives.item_queue import ItemQueue


def _ids(*indices):
    return tf.constant(list(indices), tf.int64)


def _assert_contents(contents, values, valid):
    got_values, got_valid = contents
    np.testing.assert_array_equal(got_values.numpy(), values)
    assert got_valid.numpy().tolist() == valid


def test_fifo_keeps_the_newest_items_oldest_first():
    queue = ItemQueue(size=3, mode="indices")
    _assert_contents(queue.contents(), [-1, -1, -1], [False, False, False])
    queue.enqueue(_ids(0, 1))
    _assert_contents(queue.contents(), [0, 1, -1], [True, True, False])
    queue.enqueue(_ids(2, 3))  # 3 overwrites the oldest, 0
    _assert_contents(queue.contents(), [1, 2, 3], [True, True, True])
    queue.enqueue(_ids(4))
    _assert_contents(queue.contents(), [2, 3, 4], [True, True, True])
    queue.enqueue(_ids(5, 6, 7, 8))  # batch > size: only its newest 3 stay
    _assert_contents(queue.contents(), [6, 7, 8], [True, True, True])
    assert queue.count.numpy().tolist() == [9]


def test_indices_are_int64_and_must_be_integers():
    queue = ItemQueue(size=2, mode="indices")
    queue.enqueue(tf.constant([7, 42], tf.int32))
    assert queue.contents()[0].dtype == tf.int64
    _assert_contents(queue.contents(), [7, 42], [True, True])
    with pytest.raises(ValueError, match="integers"):
        queue.enqueue(tf.constant(["a"]))


def test_rows_are_routed_to_their_queues():
    queue = ItemQueue(size=2, dim=1, num_queues=3)
    queue.enqueue(tf.constant([[1.0], [2.0], [3.0]]), queue_index=tf.constant([1, 0, 1]))
    # queue 0: [2]; queue 1: [1, 3]; queue 2: empty.
    _assert_contents(queue.contents(0), [[2.0], [0.0]], [True, False])
    _assert_contents(queue.contents(1), [[1.0], [3.0]], [True, True])
    queue.enqueue(tf.constant([[4.0], [5.0], [6.0], [7.0]]), queue_index=[1, 1, 0, 1])
    # queue 0: 2, 6; queue 1 gets 4, 5, 7 while full: 1, 3 -> 5, 7 (4 came and went).
    _assert_contents(
        queue.all_contents(),
        [[[2.0], [6.0]], [[5.0], [7.0]], [[0.0], [0.0]]],
        [[True, True], [True, True], [False, False]],
    )
    assert queue.count.numpy().tolist() == [2, 5, 0]


def test_read_then_enqueue_inside_tf_function():
    queue = ItemQueue(size=4, dim=2)

    @tf.function
    def train_step(embeddings):
        # CLRec: negatives are the earlier batches; this batch is enqueued after.
        return queue(embeddings, training=True)

    before, valid = train_step(tf.constant([[1.0, 1.0], [2.0, 2.0]]))
    assert not valid.numpy().any()
    before, valid = train_step(tf.constant([[3.0, 3.0], [4.0, 4.0], [5.0, 5.0]]))
    # Shape [num_queues=1, size=4, dim=2]; holds the first batch only.
    np.testing.assert_array_equal(before.numpy()[0, :2], [[1, 1], [2, 2]])
    assert valid.numpy().tolist() == [[True, True, False, False]]
    # Now 1..5 went in; the newest 4 remain.
    _assert_contents(queue.contents(), [[2, 2], [3, 3], [4, 4], [5, 5]], [True] * 4)
    queue(tf.constant([[9.0, 9.0]]), training=False)
    assert queue.count.numpy().tolist() == [5]


def test_checkpoint_round_trip(tmp_path):
    queue = ItemQueue(size=3, mode="indices", num_queues=2)
    queue.enqueue(_ids(0, 1, 2), queue_index=[0, 1, 0])
    path = tf.train.Checkpoint(queue=queue).save(str(tmp_path / "ckpt"))
    queue.enqueue(_ids(9, 8, 7, 6), queue_index=[0, 0, 1, 1])
    tf.train.Checkpoint(queue=queue).restore(path).assert_consumed()
    _assert_contents(
        queue.all_contents(),
        [[0, 2, -1], [1, -1, -1]],
        [[True, True, False], [True, False, False]],
    )
    restored = ItemQueue(size=3, mode="indices", num_queues=2)
    tf.train.Checkpoint(queue=restored).restore(path).assert_consumed()
    restored.enqueue(_ids(3, 4))  # the write pointer came back too
    _assert_contents(restored.contents(0), [2, 3, 4], [True] * 3)


def test_state_is_non_trainable_first_replica():
    queue = ItemQueue(size=3, dim=2)
    assert not queue.trainable_weights
    for weight in queue.weights:
        assert weight.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA


def test_config_round_trip_and_saved_model(tmp_path):
    queue = ItemQueue(size=3, dim=2, num_queues=2, name="queue")
    clone = ItemQueue.from_config(queue.get_config())
    assert clone.get_config() == queue.get_config()
    queue.enqueue(tf.constant([[1.0, 2.0], [3.0, 4.0]]), queue_index=[1, 1])
    inputs = tf.keras.Input(shape=(2,))
    model = tf.keras.Model(inputs, queue(inputs))
    model.save(str(tmp_path / "m"))
    loaded = tf.keras.models.load_model(str(tmp_path / "m"))
    x = tf.constant([[5.0, 6.0]])
    for got, expected in zip(loaded(x), model(x), strict=True):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    np.testing.assert_array_equal(loaded(x)[0].numpy()[1, :2], [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 0, "dim": 2}, "size"),
        ({"size": 2, "dim": 2, "num_queues": 0}, "num_queues"),
        ({"size": 2, "mode": "vectors"}, "mode"),
        ({"size": 2}, "dim"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ItemQueue(**kwargs)


def test_rejects_bad_enqueues_and_reads():
    queue = ItemQueue(size=2, dim=2, num_queues=2)
    with pytest.raises(ValueError, match=r"\[batch_size, 2\]"):
        queue.enqueue(tf.zeros([1, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="queue_index"):
        queue.enqueue(tf.zeros([1, 2]), queue_index=[2])
    with pytest.raises(ValueError, match="queue"):
        queue.contents(2)
