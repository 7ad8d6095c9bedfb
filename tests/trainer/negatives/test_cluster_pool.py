import numpy as np
import pytest
import tensorflow as tf

from trainer.negatives.cluster_pool import ClusterPool

# Items 0..5; clusters 0: {0, 2, 5}, 1: {1, 3}, 2: {4}.
CLUSTERS = np.array([0, 1, 0, 1, 2, 0])


def _pool(**kwargs):
    pool = ClusterPool(num_items=6, num_clusters=3, max_pool_size=4, **kwargs)
    pool.assign(CLUSTERS)
    return pool


def _pools(pool):
    members, sizes = pool.members.numpy(), pool.sizes.numpy()
    return [sorted(members[c, : sizes[c]].tolist()) for c in range(len(sizes))]


def test_assign_builds_one_pool_per_cluster():
    pool = _pool()
    assert _pools(pool) == [[0, 2, 5], [1, 3], [4]]
    assert pool.sizes.numpy().tolist() == [3, 2, 1]
    assert (pool.members.numpy()[1, 2:] == -1).all()  # padding
    assert pool(tf.constant([5, 4])).numpy().tolist() == [0, 2]


def test_oversized_cluster_keeps_a_fixed_seeded_subset():
    pool = ClusterPool(num_items=10, num_clusters=1, max_pool_size=4, seed=3)
    pool.assign(np.zeros(10, np.int64))
    kept = _pools(pool)[0]
    assert len(set(kept)) == 4 and set(kept) <= set(range(10))
    pool.assign(np.zeros(10, np.int64))
    assert _pools(pool)[0] == kept  # same seed, same subset on every refresh
    twin = ClusterPool(num_items=10, num_clusters=1, max_pool_size=4, seed=3)
    twin.assign(np.zeros(10, np.int64))
    assert _pools(twin)[0] == kept


def test_refresh_changes_membership():
    pool = _pool()
    pool.assign(np.array([2, 2, 1, 0, 0, 1]))
    assert _pools(pool) == [[3, 4], [2, 5], [0, 1]]
    assert pool.cluster_of.numpy().tolist() == [2, 2, 1, 0, 0, 1]


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("num_random, num_cluster", [(1, 15), (1, 31)])
def test_cluster_draws_come_from_the_positives_cluster(num_random, num_cluster, shared):
    pool = _pool()
    positives = tf.constant([0, 1, 2, 3, 5])
    draws = pool.sample(positives, num_cluster, num_random, seed=7, shared=shared).numpy()
    assert draws.shape == (5, num_cluster + num_random) and draws.dtype == np.int32
    for row, positive in zip(draws, positives.numpy(), strict=True):
        cluster_draws = row[:num_cluster]
        assert (CLUSTERS[cluster_draws] == CLUSTERS[positive]).all()
        assert (cluster_draws != positive).all()  # never the positive itself
        assert ((row[num_cluster:] >= 0) & (row[num_cluster:] < 6)).all()


def test_cluster_draws_are_uniform_over_the_pool_without_the_positive():
    draws = _pool().sample(tf.fill([400], 2), num_cluster=10, num_random=0, seed=1).numpy()
    # Item 2's pool is {0, 2, 5}; without 2 each of 0 and 5 has probability 1/2.
    shares = np.bincount(draws.ravel(), minlength=6) / draws.size
    np.testing.assert_allclose(shares, [0.5, 0, 0, 0, 0, 0.5], atol=0.03)


def test_shared_draws_are_one_set_per_cluster_each_row_skipping_its_positive():
    pool = ClusterPool(num_items=40, num_clusters=2, max_pool_size=64)
    pool.assign(np.arange(40) % 2)  # cluster 0: the even items, 1: the odd ones
    positives = tf.constant([0, 2, 4, 0, 1, 3, 1] * 20)
    per_row = pool.sample(positives, 8, 0, seed=3).numpy()
    shared = pool.sample(positives, 8, 0, seed=3, shared=True).numpy()
    rows = positives.numpy()
    assert (shared % 2 == rows[:, None] % 2).all()  # each row's own cluster
    assert (shared != rows[:, None]).all()  # never its own positive
    for positive in (0, 1):  # rows with the same positive draw the same items
        same = shared[rows == positive]
        assert (same == same[0]).all()
    # Rows of one cluster share the uniform draws; skipping their own positive moves a
    # draw by at most one slot of the pool, so a cluster's 8 draws give at most 16 items.
    for cluster in (0, 1):
        assert len(np.unique(shared[rows % 2 == cluster])) <= 16
        assert len(np.unique(per_row[rows % 2 == cluster])) == 20  # the whole cluster


def test_shared_draws_are_uniform_over_the_pool_without_the_positive():
    pool = _pool()
    draws = np.concatenate(
        [
            pool.sample(tf.constant([2, 0]), 4, 0, seed=[9, step], shared=True).numpy()[0]
            for step in range(300)
        ]
    )
    # Row 0's positive is 2 in the pool {0, 2, 5}: 0 and 5 each half of its draws.
    shares = np.bincount(draws, minlength=6) / draws.size
    np.testing.assert_allclose(shares, [0.5, 0, 0, 0, 0, 0.5], atol=0.04)


def test_falls_back_to_random_when_the_pool_holds_only_the_positive():
    # Item 4 is alone in cluster 2; before any assign every pool is empty.
    for pool, positive in ((_pool(), 4), (ClusterPool(6, 3, 4), 0)):
        draws = pool.sample(tf.fill([100], positive), 5, 0, seed=2).numpy()
        assert set(draws.ravel().tolist()) == set(range(6))


def test_random_draws_cover_the_catalog():
    draws = _pool().sample(tf.constant([0, 1]), num_cluster=1, num_random=100, seed=0).numpy()
    assert set(draws[:, 1:].ravel().tolist()) == set(range(6))


def test_same_seed_same_draws_inside_tf_function():
    pool = _pool()
    sample = tf.function(lambda seed: pool.sample(tf.constant([0, 1, 4]), 3, 2, seed))
    first = sample(tf.constant([5, 1])).numpy()
    np.testing.assert_array_equal(sample(tf.constant([5, 1])).numpy(), first)
    np.testing.assert_array_equal(pool.sample(tf.constant([0, 1, 4]), 3, 2, [5, 1]), first)
    assert not np.array_equal(sample(tf.constant([5, 2])).numpy(), first)


def test_checkpoint_round_trip(tmp_path):
    pool = _pool()
    path = tf.train.Checkpoint(pool=pool).save(str(tmp_path / "ckpt"))
    expected = pool.sample(tf.constant([0, 1, 3]), 4, 1, seed=9).numpy()
    pool.assign(np.array([2, 2, 1, 0, 0, 1]))
    tf.train.Checkpoint(pool=pool).restore(path).assert_consumed()
    assert _pools(pool) == [[0, 2, 5], [1, 3], [4]]
    restored = ClusterPool(num_items=6, num_clusters=3, max_pool_size=4)
    tf.train.Checkpoint(pool=restored).restore(path).assert_consumed()
    np.testing.assert_array_equal(restored.sample(tf.constant([0, 1, 3]), 4, 1, 9), expected)


def test_state_is_non_trainable_first_replica():
    pool = ClusterPool(num_items=6, num_clusters=3, max_pool_size=4)
    assert not pool.trainable_weights
    for weight in pool.weights:
        assert weight.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA


def test_config_round_trip_and_saved_model(tmp_path):
    pool = _pool(seed=4, name="pool")
    clone = ClusterPool.from_config(pool.get_config())
    assert clone.get_config() == pool.get_config()
    inputs = tf.keras.Input(shape=(), dtype=tf.int64)
    model = tf.keras.Model(inputs, pool(inputs))
    model.save(str(tmp_path / "m"))
    loaded = tf.keras.models.load_model(str(tmp_path / "m"))
    items = tf.constant([0, 1, 2, 3, 4, 5], tf.int64)
    assert loaded(items).numpy().tolist() == CLUSTERS.tolist()


@pytest.mark.parametrize(
    "args, message",
    [((0, 3, 4), "num_items"), ((6, 0, 4), "num_clusters"), ((6, 3, 0), "max_pool_size")],
)
def test_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        ClusterPool(*args)


def test_rejects_bad_clusterings():
    pool = ClusterPool(num_items=6, num_clusters=3, max_pool_size=4)
    with pytest.raises(ValueError, match=r"\[6\]"):
        pool.assign(np.zeros(5, np.int64))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        pool.assign(np.array([0, 1, 2, 3, 0, 0]))
