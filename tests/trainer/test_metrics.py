"""Tests for trainer.metrics: tiny inline rankings with hand-computed expectations."""

import math

import numpy as np
import pytest

from trainer import metrics

# Three users, catalog of 10 items, rankings of width 4.
RANKED = np.array(
    [
        [0, 1, 2, 3],  # user 0: relevant {1, 7} -> hit at rank 2 only
        [4, 5, 6, 7],  # user 1: relevant {4, 6} -> hits at ranks 1 and 3
        [8, 9, 0, 1],  # user 2: relevant {} -> skipped by relevance metrics
    ]
)
RELEVANT = [{1, 7}, np.array([4, 6]), set()]


def test_hit_rate():
    # k=1: user0 miss, user1 hit -> 1/2; k=2: both hit -> 1.
    assert metrics.hit_rate_at_k(RANKED, RELEVANT, 1) == pytest.approx(0.5)
    assert metrics.hit_rate_at_k(RANKED, RELEVANT, 2) == pytest.approx(1.0)


def test_recall():
    # k=2: user0 1/2, user1 1/2 -> 0.5; k=4: user0 1/2 (item 7 not ranked), user1 2/2 -> 0.75.
    assert metrics.recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(0.5)
    assert metrics.recall_at_k(RANKED, RELEVANT, 4) == pytest.approx(0.75)


def test_precision():
    # k=2: user0 1/2, user1 1/2 -> 0.5; k=4: user0 1/4, user1 2/4 -> 0.375.
    assert metrics.precision_at_k(RANKED, RELEVANT, 2) == pytest.approx(0.5)
    assert metrics.precision_at_k(RANKED, RELEVANT, 4) == pytest.approx(0.375)


def test_ndcg():
    # k=4, user0: DCG = 1/log2(3); IDCG over min(2, 4) = 2 hits = 1 + 1/log2(3).
    user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    # user1: DCG = 1 + 1/log2(4) = 1.5; same IDCG.
    user1 = 1.5 / (1 + 1 / math.log2(3))
    assert metrics.ndcg_at_k(RANKED, RELEVANT, 4) == pytest.approx((user0 + user1) / 2)
    # k=1: IDCG over min(2, 1) = 1 hit = 1; user0 0, user1 1 -> 0.5.
    assert metrics.ndcg_at_k(RANKED, RELEVANT, 1) == pytest.approx(0.5)


def test_ndcg_single_hit_at_rank_two_is_one_over_log2_three():
    # one relevant item at rank 2: DCG = 1/log2(3) = 0.6309, IDCG = 1.
    assert metrics.ndcg_at_k(np.array([[5, 6, 7]]), [{6}], 3) == pytest.approx(1 / math.log2(3))


def test_user_without_relevant_items_is_skipped():
    # Only user 0 counts: hit at rank 1 -> every metric as for a single user.
    ranked = np.array([[3, 4], [3, 4]])
    assert metrics.hit_rate_at_k(ranked, [{3}, []], 1) == pytest.approx(1.0)
    assert metrics.recall_at_k(ranked, [{3}, []], 2) == pytest.approx(1.0)


def test_no_relevant_at_all_raises():
    with pytest.raises(ValueError, match="relevant"):
        metrics.recall_at_k(RANKED, [set(), set(), set()], 2)


def test_padding_never_hits():
    # -1 pads the list; of relevant {9, 2} only 9 is ranked -> recall 1/2, diversity 1.
    ranked = np.array([[9, -1]])
    assert metrics.recall_at_k(ranked, [{9, 2}], 2) == pytest.approx(0.5)
    assert metrics.aggregate_diversity(ranked, 2) == 1


@pytest.mark.parametrize("k", [0, 5, 2.0, True])
def test_bad_k_names_k(k):
    with pytest.raises(ValueError, match=r"\bk\b"):
        metrics.recall_at_k(RANKED, RELEVANT, k)


def test_relevant_length_mismatch_names_relevant():
    with pytest.raises(ValueError, match="relevant"):
        metrics.hit_rate_at_k(RANKED, RELEVANT[:2], 2)
    with pytest.raises(ValueError, match="relevant"):
        metrics.hit_rate_at_k(RANKED, [{-1}, {4}, set()], 2)


def test_duplicate_in_ranking_rejected():
    with pytest.raises(ValueError, match="ranked row 0"):
        metrics.recall_at_k(np.array([[1, 1]]), [{1}], 2)


def test_true_top_k_overlap():
    # user0 top2 {0,1} vs truth {1,5} -> 1/2; user1 {4,5} vs {4,5} -> 2/2; user2 {8,9} vs
    # {2,3} -> 0 -> mean 0.5 (all users count, relevance plays no part).
    truth = np.array([[1, 5, 0], [5, 4, 1], [2, 3, 8]])
    assert metrics.true_top_k_overlap(RANKED, truth, 2) == pytest.approx(0.5)
    # k=3: user0 {0,1,2}∩{1,5,0} = 2, user1 {4,5,6}∩{5,4,1} = 2, user2 {8,9,0}∩{2,3,8} = 1
    # -> (2 + 2 + 1) / 9.
    assert metrics.true_top_k_overlap(RANKED, truth, 3) == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="k=4"):
        metrics.true_top_k_overlap(RANKED, truth, 4)


def test_aggregate_diversity_and_coverage():
    # top2: {0,1} ∪ {4,5} ∪ {8,9} = 6 items; top4 adds 2,3,6,7 (0,1 repeat) -> 10.
    assert metrics.aggregate_diversity(RANKED, 2) == 6
    assert metrics.aggregate_diversity(RANKED, 4) == 10
    assert metrics.catalog_coverage(RANKED, 2, 20) == pytest.approx(0.3)


def test_popularity_index():
    popularity = np.array([10.0, 8, 6, 4, 2, 0, 0, 0, 0, 0])
    # most-popular top2 = items 0, 1 -> mean 9. Rankings top2 = {0,1}, {4,5}, {8,9}:
    # popularity (10 + 8 + 2 + 0 + 0 + 0) / 6 = 20/6 -> index (20/6) / 9 = 0.37037.
    assert metrics.popularity_index(RANKED, 2, popularity) == pytest.approx(20 / 54)
    most_popular = np.tile(np.argsort(-popularity)[:2], (3, 1))
    assert metrics.popularity_index(most_popular, 2, popularity) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="train_popularity"):
        metrics.popularity_index(RANKED, 2, np.zeros(10))


def test_gini():
    # equal counts -> 0; all on one of 4 items -> (4-1)/4 = 0.75.
    assert metrics.gini(np.array([3, 3, 3, 3])) == pytest.approx(0.0)
    assert metrics.gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)
    # [1, 3]: sum (2i-n-1) x = -1*1 + 1*3 = 2; n*sum = 2*4 = 8 -> 0.25.
    assert metrics.gini(np.array([3, 1])) == pytest.approx(0.25)
    assert metrics.gini(np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="counts"):
        metrics.gini(np.array([-1, 2]))


def test_recommendation_counts():
    # top2 of RANKED: items 0,1,4,5,8,9 once each.
    counts = metrics.recommendation_counts(RANKED, 2, 10)
    np.testing.assert_array_equal(counts, [1, 1, 0, 0, 1, 1, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="num_items"):
        metrics.recommendation_counts(RANKED, 2, 5)


def test_evaluate_rankings_flat_dict():
    popularity = np.arange(10, 0, -1, dtype=float)
    truth = np.array([[1, 5], [5, 4], [2, 3]])
    result = metrics.evaluate_rankings(
        RANKED, RELEVANT, [1, 2], true_top=truth, train_popularity=popularity
    )
    names = ["hit_rate", "recall", "precision", "ndcg", "aggregate_diversity"]
    names += ["true_top_k_overlap", "coverage", "gini", "popularity_index"]
    assert set(result) == {f"{n}@{k}" for n in names for k in (1, 2)}
    assert result["recall@2"] == pytest.approx(0.5)
    # top2 counts: six items once, four never -> sorted [0,0,0,0,1,1,1,1,1,1];
    # sum (2i-11) x over i=5..10 = -1+1+3+5+7+9 = 24; n*sum = 10*6 = 60 -> 0.4.
    assert result["gini@2"] == pytest.approx(0.4)
    assert result["coverage@2"] == pytest.approx(0.6)


def test_repeatable():
    # Same inputs twice -> identical outputs (no hidden state).
    first = metrics.evaluate_rankings(RANKED, RELEVANT, [4])
    assert metrics.evaluate_rankings(RANKED, RELEVANT, [4]) == first
