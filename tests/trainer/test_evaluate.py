import numpy as np

from trainer.evaluate import top_k


def test_top_k_orders_and_excludes():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    ranked = top_k(lambda rows: scores[rows], 2, 2, [np.array([1]), np.array([], dtype=int)])
    # user 0: item 1 (0.9) is excluded -> 3 (0.7), 2 (0.5); user 1: 0 (0.4), 1 (0.3)
    np.testing.assert_array_equal(ranked, [[3, 2], [0, 1]])


def test_top_k_chunks_give_the_same_answer(monkeypatch):
    import trainer.evaluate as evaluate

    rng = np.random.default_rng(0)
    scores = rng.random((7, 20))
    excluded = [rng.choice(20, 3, replace=False) for _ in range(7)]
    whole = top_k(lambda rows: scores[rows], 7, 5, excluded)
    monkeypatch.setattr(evaluate, "_CHUNK", 2)
    np.testing.assert_array_equal(top_k(lambda rows: scores[rows], 7, 5, excluded), whole)
    for row, items in enumerate(excluded):
        assert not set(whole[row]) & set(items)


def test_oracle_ranks_by_the_true_list_without_excluded_items():
    from trainer.evaluate import QuerySet, _oracle_ranking

    queries = QuerySet(
        users=["u0", "u1"],
        features={},
        relevant=[set(), set()],
        true_top=[["i3", "i1", "i2", "i0"], ["i2", "unknown", "i0"]],
    )
    index = {"i0": 0, "i1": 1, "i2": 2, "i3": 3}
    excluded = [np.array([1]), np.array([], dtype=np.int64)]
    ranked = _oracle_ranking(queries, index, excluded, 3)
    # u0: i3, (i1 excluded), i2, i0; u1: i2, (unknown dropped), i0, then padding.
    np.testing.assert_array_equal(ranked, [[3, 2, 0], [2, 0, -1]])


def test_most_popular_is_the_global_order_minus_each_users_exclusions():
    from trainer.evaluate import ranked_by_order

    popularity = np.array([5.0, 9.0, 1.0, 7.0, 3.0])
    excluded = [np.array([1]), np.array([], dtype=int), np.array([3, 0])]
    ranked = ranked_by_order(np.argsort(-popularity, kind="stable"), 3, excluded)
    np.testing.assert_array_equal(ranked, [[3, 0, 4], [1, 3, 0], [1, 4, 2]])
    # The same as scoring every user by popularity.
    scored = top_k(lambda rows: np.tile(popularity, (rows.stop - rows.start, 1)), 3, 3, excluded)
    np.testing.assert_array_equal(ranked, scored)


def test_random_ranking_is_a_seeded_sample_without_exclusions():
    from trainer.evaluate import random_ranking

    excluded = [np.arange(0, 50), np.array([], dtype=int)] * 200
    first = random_ranking(100, 10, excluded, seed=3)
    np.testing.assert_array_equal(first, random_ranking(100, 10, excluded, seed=3))
    assert not np.array_equal(first, random_ranking(100, 10, excluded, seed=4))
    for row, skip in zip(first, excluded, strict=True):
        assert len(set(row)) == 10 and not set(row) & set(skip)
    # Uniform over what is left: items 50..99 for the first kind of user, all for the other.
    counts = np.bincount(first[1::2].ravel(), minlength=100)
    assert counts.sum() == 2_000 and counts.max() < 45  # expected 20 each
    assert first[0::2].min() >= 50
