"""Each negative source's candidates, masks and corrections on tiny inputs."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from trainer.negatives.candidates import Batch
from trainer.negatives.cluster import ClusterNegatives
from trainer.negatives.corpus import CorpusNegatives
from trainer.negatives.in_batch import InBatchNegatives
from trainer.negatives.intention_queue import IntentionQueueNegatives
from trainer.negatives.logged import LoggedNegatives
from trainer.negatives.queue import QueueNegatives

ITEMS = ["a", "b", "c", "d", "e", "f"]
CODES = {item: i for i, item in enumerate(ITEMS)}


def _encode(indices):
    """A fixed 'tower' over catalog indices: item k -> [k, 1]; -1 (padding) -> [-1, 1]."""
    code = tf.cast(indices, tf.float32)
    return tf.stack([code, tf.ones_like(code)], axis=-1)


def _index(names):
    """Item names -> the catalog indices the sources see (-1: padding, unknown)."""
    return tf.constant(np.vectorize(lambda n: CODES.get(n, -1), otypes=[np.int64])(np.array(names)))


def _names(indices):
    """Catalog indices -> item names ("" for -1)."""
    return np.vectorize(lambda i: ITEMS[i] if i >= 0 else "")(np.asarray(indices))


class _Tower:
    """What `bind` reads of a candidate tower: the catalog."""

    catalog = ITEMS


def _item_index(values):
    return values if values.dtype.is_integer else _index(values.numpy().astype(str))


def _batch(positive_ids, features=None):
    ids = _index(positive_ids)
    return Batch(
        features or {},
        tf.ones([len(positive_ids), 2]),
        ids,
        _encode(ids),
        _encode,
        len(ITEMS),
        _item_index,
        True,
    )


def test_in_batch_static_expected_count_is_batch_size_times_click_share():
    source = InBatchNegatives("static", {"a": 0.5, "b": 0.1})
    source.bind(_Tower())
    batch = _batch(["a", "b", "a", "z"])
    candidates = source.sample(batch)
    assert candidates.exclude_diagonal and candidates.shared
    # 4 rows × share; "z" was never clicked: as rare as the rarest (0.1)
    np.testing.assert_allclose(
        source.expected_count(candidates.ids, batch).numpy(), [2.0, 0.4, 2.0, 0.4], rtol=1e-6
    )


def test_in_batch_streaming_counts_steps():
    source = InBatchNegatives("streaming", frequency_buckets=101, frequency_alpha=0.5)
    source.bind(_Tower())
    for _ in range(4):  # "a" every step, "b" every other step
        source.update(_batch(["a"]))
        source.update(_batch(["a", "b"]))
    probability = source.expected_count(_index(["a", "b"]), _batch(["a"])).numpy()
    # "a": a gap of one step -> 1; "b": a gap of two steps -> 1/2
    np.testing.assert_allclose(probability, [1.0, 0.5], rtol=1e-6)


def test_corpus_negatives_shared_and_per_row():
    batch = _batch(["a", "b"])
    shared = CorpusNegatives(5, corrected=True).sample(batch)
    assert shared.ids.shape == (5,) and shared.embeddings.shape == (5, 2)
    per_row = CorpusNegatives(3, per_row=True, group="C").sample(batch)
    assert per_row.ids.shape == (2, 3) and per_row.group == "C"
    expected = CorpusNegatives(5).expected_count(_index(["a"]), batch).numpy()
    np.testing.assert_allclose(expected, [5 / 6])  # 5 draws over 6 items


def test_draws_repeat_within_a_step_and_differ_across_steps_and_sources():
    batch = _batch(["a"] * 50)
    shared = CorpusNegatives(50, seed=1, name="corpus")
    per_row = CorpusNegatives(1, per_row=True, group="C", seed=1, name="space_c")
    first = shared.sample(batch).ids.numpy()
    np.testing.assert_array_equal(shared.sample(batch).ids.numpy(), first)  # one step
    # One seed and step, two sources: the source's name is in the seed (50 draws over 6
    # items: equal by chance with probability 6^-50).
    assert (per_row.sample(batch).ids.numpy().ravel() != first).any()
    shared.update(batch)  # the training step's end: the next step draws afresh
    assert (shared.sample(batch).ids.numpy() != first).any()


def test_per_row_draws_from_a_pool_encode_the_pool_once_and_stay_uniform():
    encoded = []

    def encode(indices):
        encoded.append(tuple(indices.shape))
        return _encode(indices)

    # Named: the source's name is in its seed, so the draws do not depend on how many
    # layers the process made before (Keras's automatic names count them).
    source = CorpusNegatives(5, per_row=True, group="C", pool=3, name="space_c")
    batch = dataclasses.replace(_batch(["a"] * 4), encode=encode)

    def step():  # a training step's draws, then its update (the next step's seed)
        ids = source.sample(batch).ids.numpy()
        source.update(batch)
        return ids

    ids = np.concatenate([step() for _ in range(600)])
    assert ids.shape == (2400, 5)
    assert encoded == [(3,)] * 600  # the pool alone goes through the tower
    # Each draw is uniform over the 6 items: 12,000 draws, 2,000 expected per item. The
    # pool's sharing makes the counts lumpy (about 113 standard deviation here): 5 of them.
    counts = np.bincount(ids.ravel(), minlength=len(ITEMS))
    assert np.abs(counts - 2000).max() < 565, counts
    candidates = source.sample(_batch(["a"] * 40))
    assert candidates.ids.shape == (40, 5) and candidates.group == "C"
    # Each row's embeddings are its own draws' (the fixed tower: item k -> [k, 1]).
    np.testing.assert_allclose(candidates.embeddings.numpy()[..., 0], candidates.ids.numpy())
    assert len(np.unique(candidates.ids.numpy())) <= 3
    with pytest.raises(ValueError, match="a pool is for per-row draws"):
        CorpusNegatives(5, pool=3)


def test_logged_negatives_take_and_pad_the_space():
    features = {"space_b": tf.constant([["c", "d", "e"], ["f", "", ""]])}
    candidates = LoggedNegatives("B", 4).sample(_batch(["a", "b"], features))
    np.testing.assert_array_equal(_names(candidates.ids), [["c", "d", "e", ""], ["f", "", "", ""]])
    np.testing.assert_allclose(candidates.embeddings.numpy()[0, :, 0], [2, 3, 4, -1])


def test_queue_returns_earlier_batches_only():
    source = QueueNegatives(size=3, dim=2)
    first = source.sample(_batch(["a", "b"]))
    assert not first.valid.numpy().any()  # empty before any step
    source.update(_batch(["a", "b"]))
    source.update(_batch(["c", "d"]))
    candidates = source.sample(_batch(["e"]))
    # size 3, oldest first: "a" was overwritten by "d"
    np.testing.assert_array_equal(_names(candidates.ids), ["b", "c", "d"])
    np.testing.assert_allclose(candidates.embeddings.numpy()[:, 0], [1, 2, 3])
    assert candidates.log_q is None and source.corrected is False


def test_queue_ids_mode_reencodes():
    source = QueueNegatives(size=2, dim=2, mode="ids")
    source.update(_batch(["e", "f"]))
    candidates = source.sample(_batch(["a"]))
    np.testing.assert_allclose(candidates.embeddings.numpy(), [[4, 1], [5, 1]])


def _category(ids):
    """Category embedding: items a, b, c point one way, d, e, f the other."""
    abc = tf.reshape(tf.logical_and(ids >= 0, ids < 3), [-1, 1])
    return tf.where(abc, tf.constant([[1.0, 0.0]]), tf.constant([[-1.0, 0.0]]))


def test_intention_queues_route_by_category_and_score_with_intention_vectors():
    source = IntentionQueueNegatives(intentions=2, size=4, dim=2, category_dim=2, seed=0)
    source.category_embedding = _category
    assert source.sample(_batch(["a"])) is None  # it adds a loss of its own, no candidates
    source.update(_batch(["a", "d", "b", "e"]))
    indices, valid = source._indices.all_contents()
    assert indices.dtype == tf.int64  # the queues hold catalog indices, not strings
    queues = [
        {ITEMS[i] for i in row[keep]}
        for row, keep in zip(indices.numpy(), valid.numpy(), strict=True)
    ]
    assert sorted(queues, key=sorted) == [{"a", "b"}, {"d", "e"}]
    batch = _batch(["c", "f"])
    which = source.intention(batch.positive_ids).numpy()
    vectors = source.intention_vectors(batch.query).numpy()  # query rows are [1, 1]
    loss = 0.0
    for row, positive in enumerate(["c", "f"]):
        user = vectors[row, which[row]]
        # item k embeds as [k, 1]; the row's negatives are its positive's intention queue
        own = [i for i in ("a", "b", "d", "e") if (i in "ab") == (positive in "abc")]
        logits = [user @ [CODES[positive], 1]] + [user @ [CODES[i], 1] for i in own]
        loss += np.log(np.exp(logits).sum()) - logits[0]
    np.testing.assert_allclose(source.extra_loss(batch).numpy(), loss, rtol=1e-5)


def test_cluster_negatives_come_from_the_positives_cluster():
    source = ClusterNegatives(cluster=6, random=2, num_items=6, num_clusters=2, seed=1)
    source.pool.assign(np.array([0, 0, 0, 1, 1, 1]))
    candidates = source.sample(_batch(["a", "e"]))
    ids = _names(candidates.ids)
    assert ids.shape == (2, 8)
    assert set(ids[0, :6]) <= {"b", "c"} and set(ids[1, :6]) <= {"d", "f"}
    first = ids.copy()
    source.update(_batch(["a"]))  # next step, new draws; same step, same draws
    assert not np.array_equal(_names(source.sample(_batch(["a", "e"])).ids), first)


def test_shared_cluster_negatives_are_one_draw_per_cluster():
    source = ClusterNegatives(4, 1, num_items=6, num_clusters=2, seed=1, shared=True)
    source.pool.assign(np.array([0, 0, 0, 1, 1, 1]))
    ids = _names(source.sample(_batch(["a", "e", "a", "d"])).ids)
    np.testing.assert_array_equal(ids[0, :4], ids[2, :4])  # both rows clicked "a"
    assert set(ids[0, :4]) <= {"b", "c"} and set(ids[1, :4]) <= {"d", "f"}
    assert "d" not in ids[3, :4]
    clone = ClusterNegatives.from_config(source.get_config())
    assert clone.get_config()["shared"] is True


def test_cluster_negatives_skip_draws_scored_near_the_positive():
    # Query [1, 1] scores item k ([k, 1]) at k + 1: "a" 1, "b" 2, ..., "f" 6.
    batch = _batch(["e", "a"])
    for margin, kept in ((0.0, {"d"}), (1.5, set())):
        source = ClusterNegatives(6, 2, num_items=6, num_clusters=2, seed=1, margin=margin)
        source.pool.assign(np.array([0, 0, 0, 1, 1, 1]))
        candidates = source.sample(batch)
        ids, valid = _names(candidates.ids), candidates.valid.numpy()
        # "e" (5): "f" (6) >= 5 - margin is skipped; "d" (4) only when the margin is 1.5.
        assert set(ids[0, :6][valid[0, :6]]) == kept and {"d", "f"} == set(ids[0, :6])
        # "a" (1): "b" and "c" both score above it: every same-cluster draw is skipped.
        assert not valid[1, :6].any()
        assert valid[:, 6:].all()  # random draws are always negatives
    unchecked = ClusterNegatives(6, 2, num_items=6, num_clusters=2, seed=1)
    assert unchecked.sample(batch).valid is None
