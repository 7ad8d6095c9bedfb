import numpy as np
import pytest
import tensorflow as tf

from trainer.negatives.cluster_pool import ClusterPool
from trainer.negatives.kmeans import KMeansRefresh, kmeans


def _blobs(per_blob=20, seed=0):
    """Three tight 2-D blobs 10 apart (noise sd 0.5): rows 0-19, 20-39, 40-59."""
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    noise = np.random.default_rng(seed).normal(scale=0.5, size=(3 * per_blob, 2))
    return np.repeat(centres, per_blob, axis=0) + noise, np.repeat(np.arange(3), per_blob)


def _same_partition(labels, truth):
    """Equal up to renaming clusters: the label pairs match one to one."""
    pairs = set(zip(labels.tolist(), truth.tolist(), strict=True))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_separable_blobs(seed):
    points, truth = _blobs()
    labels = kmeans(points, num_clusters=3, seed=seed)
    assert labels.shape == (60,)
    assert _same_partition(labels, truth)


def test_same_seed_same_labels():
    points = np.random.default_rng(5).normal(size=(200, 4))  # no real clusters: init matters
    np.testing.assert_array_equal(kmeans(points, 7, seed=3), kmeans(points, 7, seed=3))


def test_cosine_groups_by_direction_not_length():
    directions = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    lengths = np.array([1.0, 50.0, 3.0, 20.0])
    # 12 points: each direction at 4 lengths; euclidean would split near from far.
    points = (directions[:, None, :] * lengths[None, :, None]).reshape(-1, 2)
    truth = np.repeat(np.arange(3), 4)
    assert _same_partition(kmeans(points, 3, metric="cosine"), truth)


def test_as_many_clusters_as_points_gives_each_its_own():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    assert sorted(kmeans(points, 4).tolist()) == [0, 1, 2, 3]


def test_duplicate_points_still_give_labels_in_range():
    points = np.array([[0.0, 0.0]] * 5 + [[3.0, 3.0]])
    labels = kmeans(points, 3)
    assert ((labels >= 0) & (labels < 3)).all() and labels[5] != labels[0]


@pytest.mark.parametrize(
    "points, k, kwargs, message",
    [
        (np.zeros((3, 2)), 4, {}, "num_clusters"),
        (np.zeros(3), 1, {}, r"\[n, d\]"),
        (np.zeros((3, 2)), 2, {"metric": "manhattan"}, "metric"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), 1, {}, "NaN"),
    ],
)
def test_rejects_bad_input(points, k, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kmeans(points, k, **kwargs)


def _tiny_fit(callback, steps=6, start_step=0):
    model = tf.keras.Sequential([tf.keras.Input(shape=(2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.iterations.assign(start_step)  # as if restored from a checkpoint
    x = np.zeros((2 * steps, 2), np.float32)
    model.fit(
        x, np.zeros((2 * steps, 1), np.float32), batch_size=2, verbose=0, callbacks=[callback]
    )


def test_callback_refreshes_the_pool_during_fit():
    points, truth = _blobs()
    pool = ClusterPool(num_items=60, num_clusters=3, max_pool_size=60)
    calls = []

    def embed_items():
        calls.append(1)
        return points

    callback = KMeansRefresh(pool, embed_items, every_steps=2, seed=0)
    _tiny_fit(callback)  # 6 steps: refreshes after steps 2, 4 and 6
    assert callback.refreshes == len(calls) == 3
    np.testing.assert_array_equal(pool.cluster_of.numpy(), kmeans(points, 3, seed=0))
    assert _same_partition(pool.cluster_of.numpy(), truth)
    assert sorted(pool.sizes.numpy().tolist()) == [20, 20, 20]


def test_callback_refresh_at_start():
    pool = ClusterPool(num_items=60, num_clusters=3, max_pool_size=60)
    callback = KMeansRefresh(pool, lambda: _blobs()[0], every_steps=4, refresh_at_start=True)
    _tiny_fit(callback)  # at start, then after step 4
    assert callback.refreshes == 2
    assert sorted(pool.sizes.numpy().tolist()) == [20, 20, 20]


def test_callback_counts_global_steps_of_a_resumed_run():
    pool = ClusterPool(num_items=60, num_clusters=3, max_pool_size=60)
    callback = KMeansRefresh(pool, lambda: _blobs()[0], every_steps=4)
    # Resumed at global step 3, 6 more steps: refreshes after global steps 4 and 8
    # (counting from 0 again would refresh once, after the 4th step of this run).
    _tiny_fit(callback, start_step=3)
    assert callback.refreshes == 2


def test_callback_rejects_wrong_embeddings():
    pool = ClusterPool(num_items=5, num_clusters=2, max_pool_size=5)
    callback = KMeansRefresh(pool, lambda: np.zeros((4, 2)), every_steps=1)
    with pytest.raises(ValueError, match=r"\[5, d\]"):
        callback.refresh()
    with pytest.raises(ValueError, match="every_steps"):
        KMeansRefresh(pool, lambda: np.zeros((5, 2)), every_steps=0)
