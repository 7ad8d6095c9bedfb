"""The item index: exact brute force, ScaNN recall against it, save/load round trips."""

import os

import numpy as np
import pytest

from serving.brute_force_index import BruteForceIndex
from serving.index_config import IndexConfig
from serving.index_io import build_index, load_index
from serving.scann_index import PARALLEL_FROM, ScannIndex


def _clustered(num_items: int, dim: int, seed: int) -> np.ndarray:
    """Items around 50 centres, like trained embeddings (not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    items = centres[rng.integers(0, 50, num_items)] + 0.5 * rng.normal(size=(num_items, dim))
    return items.astype(np.float32)


def test_brute_force_is_exact_and_honours_exclusions():
    items = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    index = BruteForceIndex(items)
    # query (2, 1): scores 2, 1, 3, -2 -> rows 2, 0, 1, 3
    indices, scores = index.search(np.array([[2, 1]], dtype=np.float32), 3)
    assert indices.tolist() == [[2, 0, 1]]
    assert scores.tolist() == [[3.0, 2.0, 1.0]]
    indices, _ = index.search(np.array([[2, 1], [0, 1]], dtype=np.float32), 2, [[2], [1, 2]])
    # second query (0, 1): scores 0, 1, 1, 0 -> without rows 1, 2: rows 0, 3 (tie, stable)
    assert indices.tolist() == [[0, 1], [0, 3]]
    # excluding all but one item leaves the tail empty
    indices, scores = index.search(np.array([[2, 1]], dtype=np.float32), 2, [[0, 1, 2]])
    assert indices.tolist() == [[3, -1]] and scores[0, 1] == -np.inf


@pytest.mark.parametrize(
    "queries, k, message",
    [
        (np.zeros((1, 3)), 1, r"\[batch_size, 2\]"),
        (np.zeros((1, 2)), 0, "k must be"),
        (np.zeros((1, 2)), 5, "k must be"),
    ],
)
def test_search_rejects_bad_shapes_and_k(queries, k, message):
    index = BruteForceIndex(np.eye(2, dtype=np.float32)[[0, 1, 0, 1]])
    with pytest.raises(ValueError, match=message):
        index.search(queries, k)


@pytest.mark.parametrize(
    "num_items, kind, leaves, to_search",
    [
        (19_999, "brute_force", 0, 0),
        (20_000, "scann", 0, 0),
        (99_999, "scann", 0, 0),
        (100_000, "scann", 316, 31),
        (1_000_000, "scann", 1000, 100),
    ],
)
def test_auto_config_follows_corpus_size(num_items, kind, leaves, to_search):
    # leaves = round(sqrt(n)) from 100k items on; a tenth of them searched
    resolved = IndexConfig().resolved(num_items)
    assert (resolved.kind, resolved.num_leaves, resolved.num_leaves_to_search) == (
        kind,
        leaves,
        to_search,
    )


def test_config_round_trips_and_rejects_unknown_kind():
    config = IndexConfig(kind="scann", num_leaves=7, spherical=True)
    assert IndexConfig.from_config(config.get_config()) == config
    with pytest.raises(ValueError, match="kind"):
        IndexConfig(kind="hnsw")


@pytest.fixture(scope="module")
def corpus():
    return _clustered(20_000, 16, seed=0), _clustered(200, 16, seed=1)


def test_scann_recall_against_brute_force(corpus):
    items, queries = corpus
    # partition_above=0 forces the tree: sqrt(20k) = 141 leaves, 14 searched
    index = build_index(items, IndexConfig(kind="scann", partition_above=0))
    assert isinstance(index, ScannIndex) and index.config.num_leaves == 141
    found, scores = index.search(queries, 10)
    exact, _ = BruteForceIndex(items).search(queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= 0.9
    # reordering rescored exactly: the returned scores are the true inner products
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, items[found]), rtol=1e-5)


def test_scann_single_batched_and_parallel_searches_agree(corpus):
    items, queries = corpus
    index = build_index(items, IndexConfig(kind="scann", partition_above=0))
    many = np.concatenate([queries, queries])  # 400 >= PARALLEL_FROM: the thread pool
    assert len(many) >= PARALLEL_FROM > len(queries[:100])
    parallel, parallel_scores = index.search(many, 10)
    batched, batched_scores = index.search(queries[:100], 10)
    single = np.concatenate([index.search(q[None], 10)[0] for q in queries[:100]])
    np.testing.assert_array_equal(parallel[:100], batched)
    np.testing.assert_array_equal(single, batched)
    np.testing.assert_array_equal(parallel[:200], parallel[200:])  # same queries, same answer
    np.testing.assert_allclose(parallel_scores[:100], batched_scores, rtol=1e-6)


def test_scann_round_trips_through_a_renamed_folder(corpus, tmp_path):
    items, queries = corpus
    index = build_index(items, IndexConfig(kind="scann", partition_above=0))
    before = index.search(queries, 10, [[0, 1]] * len(queries))
    again = index.search(queries, 10, [[0, 1]] * len(queries))
    index.save(str(tmp_path / "staged"))
    os.rename(tmp_path / "staged", tmp_path / "final")  # export renames staged versions
    loaded = load_index(str(tmp_path / "final"))
    after = loaded.search(queries, 10, [[0, 1]] * len(queries))
    assert isinstance(loaded, ScannIndex) and loaded.config == index.config
    np.testing.assert_array_equal(before[0], again[0])
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1])
    assert not np.isin(after[0], [0, 1]).any()


def test_brute_force_round_trip_and_missing_index(tmp_path):
    items = _clustered(300, 4, seed=2)
    index = build_index(items)  # auto: 300 items -> brute force
    index.save(str(tmp_path / "index"))
    loaded = load_index(str(tmp_path / "index"))
    assert loaded.kind == "brute_force"
    np.testing.assert_array_equal(index.search(items[:5], 7)[0], loaded.search(items[:5], 7)[0])
    with pytest.raises(FileNotFoundError, match="index_config.json"):
        load_index(str(tmp_path))
