import numpy as np
import pytest
import tensorflow as tf

from trainer.negatives.frequency_estimator import StreamingFrequencyEstimator


def _ids(*names):
    return tf.constant(list(names))


def _state(estimator):
    return [w.numpy() for w in estimator.weights]


def _stream(seed, steps, batch_size=8):
    """Batches drawn with replacement from 10 items "i0".."i9" with fixed shares q."""
    q = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])
    draws = np.random.default_rng(seed).choice(len(q), size=(steps, batch_size), p=q)
    # An item is in a batch of 8 independent draws with probability 1 - (1 - q)^8.
    return np.char.add("i", draws.astype(str)), draws, 1.0 - (1.0 - q) ** batch_size


@tf.function
def _run(estimator, batches):
    for t in tf.range(tf.shape(batches)[0]):
        estimator.update(batches[t])


def test_hand_computed_updates_count_duplicates_once():
    estimator = StreamingFrequencyEstimator(num_buckets=101, alpha=0.5)
    assert len(set(estimator.bucket(_ids("a", "b", "z")).numpy())) == 3  # no collisions
    # Nothing seen yet: B = max(steps, 1) = 1 -> p = 1.
    np.testing.assert_allclose(estimator.probability(_ids("z")).numpy(), [1.0])
    for batch in (["a", "a", "b"], ["a"], ["b"], ["a", "b", "a"], ["a"]):
        estimator.update(tf.constant(batch))
    # t=0 a,b first seen (A=0, no gap). t=1 a: gap 1, n=1, w=1 -> B_a=1.
    # t=2 b: gap 2, n=1 -> B_b=2. t=3 a: gap 2, n=2, w=max(.5, 1/2) -> B_a=1.5;
    # b: gap 1 -> B_b=.5*2+.5*1=1.5 (the duplicate "a" counts once).
    # t=4 a: gap 1, w=.5 -> B_a=1.25. "z" never seen: B = steps = 5.
    np.testing.assert_allclose(
        estimator.probability(_ids("a", "b", "z")).numpy(), [1 / 1.25, 1 / 1.5, 1 / 5]
    )
    assert int(estimator.step) == 5


def test_integer_ids_hash_as_their_decimal_text():
    estimator = StreamingFrequencyEstimator(num_buckets=101)
    np.testing.assert_array_equal(
        estimator.bucket(tf.constant([7, 42], tf.int64)).numpy(),
        estimator.bucket(_ids("7", "42")).numpy(),
    )


def test_call_updates_only_when_training():
    estimator = StreamingFrequencyEstimator(num_buckets=101, alpha=0.5)
    estimator(_ids("a"), training=False)
    assert int(estimator.step) == 0
    estimator(_ids("a"), training=True)
    # t=0 "a" seen once, no gap yet: p = 1 / steps = 1 / 1.
    np.testing.assert_allclose(estimator(_ids("a"), training=True).numpy(), [1.0])
    assert int(estimator.step) == 2


def test_converges_to_the_true_per_step_probability():
    # alpha = 0.002: the moving average of geometric gaps then has a relative
    # standard deviation of about sqrt(alpha / 2) * sqrt(1 - p) <= 3.2%, so 10% is
    # over 3 sigma. 20_000 steps show every item >= ~1500 times, far past the
    # 1 / alpha = 500 sightings of exact averaging, so the warm-up is forgotten.
    # (A numpy replica of this test passed for 30 of 30 seeds, worst error 7.5%.)
    ids, draws, p = _stream(seed=0, steps=20_000)
    estimator = StreamingFrequencyEstimator(num_buckets=10_007, alpha=0.002)
    items = tf.constant([f"i{i}" for i in range(10)])
    assert len(set(estimator.bucket(items).numpy())) == 10  # no collisions
    _run(estimator, tf.constant(ids))
    seen = np.array([(draws == i).any(axis=1).sum() for i in range(10)])
    assert seen.min() >= 50
    np.testing.assert_allclose(estimator.probability(items).numpy(), p, rtol=0.10)


def test_checkpoint_restore_continues_exactly(tmp_path):
    ids, _, _ = _stream(seed=1, steps=60)
    first, second = tf.constant(ids[:30]), tf.constant(ids[30:])
    estimator = StreamingFrequencyEstimator(num_buckets=101, alpha=0.1)
    _run(estimator, first)
    path = tf.train.Checkpoint(estimator=estimator).save(str(tmp_path / "ckpt"))
    saved = _state(estimator)
    _run(estimator, second)
    uninterrupted = _state(estimator)

    tf.train.Checkpoint(estimator=estimator).restore(path).assert_consumed()
    for restored, expected in zip(_state(estimator), saved, strict=True):
        np.testing.assert_array_equal(restored, expected)
    # A fresh process: a new layer restored from the checkpoint, then the rest.
    resumed = StreamingFrequencyEstimator(num_buckets=101, alpha=0.1)
    tf.train.Checkpoint(estimator=resumed).restore(path).assert_consumed()
    _run(resumed, second)
    for restored, expected in zip(_state(resumed), uninterrupted, strict=True):
        np.testing.assert_array_equal(restored, expected)


def test_state_is_non_trainable_first_replica():
    estimator = StreamingFrequencyEstimator(num_buckets=11)
    assert not estimator.trainable_weights
    assert len(estimator.non_trainable_weights) == 4
    for weight in estimator.weights:
        assert weight.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA


def test_config_round_trip_and_saved_model(tmp_path):
    estimator = StreamingFrequencyEstimator(num_buckets=101, alpha=0.25, name="freq")
    clone = StreamingFrequencyEstimator.from_config(estimator.get_config())
    assert clone.get_config() == estimator.get_config()
    for batch in (["a", "b"], ["a"], ["a", "c"]):
        estimator.update(tf.constant(batch))
    inputs = tf.keras.Input(shape=(), dtype=tf.string)
    model = tf.keras.Model(inputs, estimator(inputs))
    model.save(str(tmp_path / "m"))
    loaded = tf.keras.models.load_model(str(tmp_path / "m"))
    ids = _ids("a", "b", "c", "never")
    np.testing.assert_allclose(loaded(ids).numpy(), model(ids).numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_buckets": 0}, "num_buckets"), ({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha")],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StreamingFrequencyEstimator(**kwargs)
