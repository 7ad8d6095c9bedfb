"""Retrieval metrics over top-k rankings of the whole catalog, in pure numpy.

Every function takes `ranked`, an integer array `[num_users, k_max]` of item indices
best-first (the output of a top-k over the whole catalog, with the caller's exclusions
such as the user's training clicks already applied). Negative entries are padding for
users with fewer than `k_max` candidates: they never hit and are not counted as items.
Relevance-based metrics average over the users with at least one relevant item; the
exact formulas are in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

Relevant = Sequence[Iterable[int] | np.ndarray]


def _check_ranked(ranked: np.ndarray, k: int) -> np.ndarray:
    """Validates `ranked` and `k`; returns the first k columns as int64."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(
            f"ranked must be an integer array [num_users, k_max], got dtype {ranked.dtype} "
            f"and shape {ranked.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= ranked.shape[1]:
        raise ValueError(f"k must be an int in [1, {ranked.shape[1]}] (ranked width), got {k!r}")
    top = ranked[:, :k].astype(np.int64)
    # A duplicate would count one relevant item twice and push recall past 1.
    ordered = np.sort(top, axis=1)
    dup = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if dup.any():
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ValueError(f"ranked row {row} repeats an item within the top {k}")
    return top


def _pair_keys(rows: np.ndarray, items: np.ndarray, width: int) -> np.ndarray:
    """Encodes (row, item) pairs as one int64 so set membership is a single np.isin."""
    return rows.astype(np.int64) * width + items.astype(np.int64)


def _hits(top: np.ndarray, relevant: Relevant) -> tuple[np.ndarray, np.ndarray]:
    """Marks relevant items in the top k of the users that have any.

    Args:
      top: int64 array [num_users, k] of item indices, negative = padding.
      relevant: num_users collections of relevant item indices.

    Returns:
      hits: bool array [num_counted, k], True where the ranked item is relevant.
      num_relevant: int array [num_counted] of distinct relevant items per counted user.

    Raises:
      ValueError: `relevant` has the wrong length or no user has a relevant item.
    """
    if len(relevant) != top.shape[0]:
        raise ValueError(
            f"relevant must have one entry per ranked row ({top.shape[0]}), got {len(relevant)}"
        )
    sets = [np.unique(np.fromiter(r, dtype=np.int64)) for r in relevant]
    if any(s.size and s[0] < 0 for s in sets):
        raise ValueError("relevant holds a negative item index; items are 0..num_items-1")
    num_relevant = np.array([s.size for s in sets], dtype=np.int64)
    counted = np.flatnonzero(num_relevant > 0)
    if counted.size == 0:
        raise ValueError("relevant holds no relevant item for any user; nothing to average")
    width = int(max(top.max(initial=0), max(int(s.max()) for s in sets if s.size)) + 1)
    rel_keys = np.concatenate(
        [_pair_keys(np.full(sets[u].size, u), sets[u], width) for u in counted]
    )
    rows = np.repeat(counted, top.shape[1]).reshape(-1, top.shape[1])
    sub = top[counted]
    hits = np.isin(_pair_keys(rows, sub, width), rel_keys) & (sub >= 0)
    return hits, num_relevant[counted]


def hit_rate_at_k(ranked: np.ndarray, relevant: Relevant, k: int) -> float:
    """Fraction of users with at least one relevant item in their top k.

    Args:
      ranked: int array [num_users, k_max] of item indices, best first.
      relevant: num_users collections of relevant item indices.
      k: cut-off, 1 <= k <= k_max.

    Returns:
      The hit rate over users with at least one relevant item.

    Raises:
      ValueError: a bad `ranked`, `relevant` or `k`.
    """
    hits, _ = _hits(_check_ranked(ranked, k), relevant)
    return float(hits.any(axis=1).mean())


def recall_at_k(ranked: np.ndarray, relevant: Relevant, k: int) -> float:
    """Mean over users of |top k ∩ relevant| / |relevant|.

    Args and Raises as in `hit_rate_at_k`.

    Returns:
      The recall over users with at least one relevant item.
    """
    hits, num_relevant = _hits(_check_ranked(ranked, k), relevant)
    return float((hits.sum(axis=1) / num_relevant).mean())


def precision_at_k(ranked: np.ndarray, relevant: Relevant, k: int) -> float:
    """Mean over users of |top k ∩ relevant| / k.

    Args and Raises as in `hit_rate_at_k`.

    Returns:
      The precision over users with at least one relevant item.
    """
    hits, _ = _hits(_check_ranked(ranked, k), relevant)
    return float((hits.sum(axis=1) / k).mean())


def ndcg_at_k(ranked: np.ndarray, relevant: Relevant, k: int) -> float:
    """Normalised discounted cumulative gain with binary gains and a log2 discount.

    DCG = sum over ranks j = 1..k of hit_j / log2(j + 1); the ideal DCG puts
    min(|relevant|, k) hits at the top.

    Args and Raises as in `hit_rate_at_k`.

    Returns:
      The NDCG over users with at least one relevant item.
    """
    hits, num_relevant = _hits(_check_ranked(ranked, k), relevant)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount
    ideal = np.cumsum(discount)[np.minimum(num_relevant, k) - 1]
    return float((dcg / ideal).mean())


def true_top_k_overlap(ranked: np.ndarray, true_top: np.ndarray, k: int) -> float:
    """Mean over users of |top k ∩ true top k| / k.

    Args:
      ranked: int array [num_users, k_max] of item indices, best first.
      true_top: int array [num_users, >= k] of each user's items by true affinity,
        best first; its first k columns are the true top k.
      k: cut-off, 1 <= k <= k_max and k <= true_top width.

    Returns:
      The overlap, averaged over all users (everyone has a true top k).

    Raises:
      ValueError: a bad `ranked`, `true_top` or `k`.
    """
    top = _check_ranked(ranked, k)
    true_top = np.asarray(true_top)
    if true_top.ndim != 2 or true_top.shape[0] != top.shape[0]:
        raise ValueError(
            f"true_top must be [num_users={top.shape[0]}, >= k], got shape {true_top.shape}"
        )
    if k > true_top.shape[1]:
        raise ValueError(f"k={k} exceeds the true_top width {true_top.shape[1]}")
    truth = true_top[:, :k].astype(np.int64)
    width = int(max(top.max(initial=0), truth.max(initial=0)) + 1)
    rows = np.repeat(np.arange(top.shape[0]), k).reshape(-1, k)
    hits = np.isin(_pair_keys(rows, top, width), _pair_keys(rows, truth, width)) & (top >= 0)
    return float((hits.sum(axis=1) / k).mean())


def recommendation_counts(ranked: np.ndarray, k: int, num_items: int) -> np.ndarray:
    """How many users have each item in their top k.

    Args:
      ranked: int array [num_users, k_max] of item indices, best first.
      k: cut-off, 1 <= k <= k_max.
      num_items: catalog size; every index in `ranked` must be below it.

    Returns:
      int array [num_items] of recommendation counts.

    Raises:
      ValueError: a bad `ranked` or `k`, or an index >= `num_items`.
    """
    top = _check_ranked(ranked, k)
    if top.size and top.max() >= num_items:
        raise ValueError(f"num_items={num_items} is not above the largest item {top.max()}")
    return np.bincount(top[top >= 0], minlength=num_items)


def aggregate_diversity(ranked: np.ndarray, k: int) -> int:
    """Number of distinct items in the union of all users' top k.

    Divide by the catalog size (see `catalog_coverage`) to compare corpora.

    Args:
      ranked: int array [num_users, k_max] of item indices, best first.
      k: cut-off, 1 <= k <= k_max.

    Returns:
      The count of distinct recommended items.
    """
    top = _check_ranked(ranked, k)
    return int(np.unique(top[top >= 0]).size)


def catalog_coverage(ranked: np.ndarray, k: int, num_items: int) -> float:
    """`aggregate_diversity` as a fraction of a catalog of `num_items` items."""
    if num_items < 1:
        raise ValueError(f"num_items must be positive, got {num_items}")
    return aggregate_diversity(ranked, k) / num_items


def popularity_index(ranked: np.ndarray, k: int, train_popularity: np.ndarray) -> float:
    """Mean training popularity of recommended items relative to a most-popular ranker.

    As in CLRec (Zhou et al., KDD 2021): the mean training popularity (e.g. click count) of
    all recommended top-k items, divided by the mean popularity of the k most popular items,
    which is what a most-popular recommender shows everyone. Most-popular scores 1.0;
    lower means less popularity bias.

    Args:
      ranked: int array [num_users, k_max] of item indices, best first.
      k: cut-off, 1 <= k <= k_max and k <= num_items.
      train_popularity: float array [num_items] of training-period popularity.

    Returns:
      The popularity index.

    Raises:
      ValueError: a bad `ranked` or `k`, or `train_popularity` empty, too short or all zero.
    """
    top = _check_ranked(ranked, k)
    popularity = np.asarray(train_popularity, dtype=np.float64)
    if popularity.ndim != 1 or popularity.size < k or (top.size and top.max() >= popularity.size):
        raise ValueError(
            f"train_popularity must be [num_items] covering every ranked item and >= k={k} "
            f"long, got shape {popularity.shape}"
        )
    most_popular = np.sort(popularity)[::-1][:k].mean()
    if most_popular <= 0:
        raise ValueError("train_popularity has no positive value to normalise by")
    return float(popularity[top[top >= 0]].mean() / most_popular)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when equal, (n-1)/n when one item has all.

    G = sum_i (2i - n - 1) x_(i) / (n sum_i x_i), with x sorted ascending and i from 1.

    Args:
      counts: array [num_items] of recommendation counts over the whole catalog (items never
        recommended included as 0, or the coefficient understates concentration).

    Returns:
      The Gini coefficient; 0.0 for all-zero counts.

    Raises:
      ValueError: `counts` empty, not 1-D or negative.
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if x.ndim != 1 or x.size == 0 or x[0] < 0:
        raise ValueError(f"counts must be a non-empty 1-D non-negative array, got {counts!r:.80}")
    total = x.sum()
    if total == 0:
        return 0.0
    n = x.size
    return float(((2 * np.arange(1, n + 1) - n - 1) @ x) / (n * total))


def evaluate_rankings(
    ranked: np.ndarray,
    relevant: Relevant,
    ks: Sequence[int],
    *,
    true_top: np.ndarray | None = None,
    train_popularity: np.ndarray | None = None,
    num_items: int | None = None,
) -> dict[str, float]:
    """Every metric at every cut-off, as a flat dict such as {"recall@10": 0.12}.

    Args:
      ranked: int array [num_users, k_max] of item indices, best first.
      relevant: num_users collections of relevant item indices.
      ks: cut-offs, each in [1, k_max].
      true_top: optional int array [num_users, >= max(ks)]; adds `true_top_k_overlap@k`.
      train_popularity: optional float array [num_items]; adds `popularity_index@k`.
      num_items: catalog size (defaults to len(train_popularity)); adds `coverage@k` and
        `gini@k`.

    Returns:
      hit_rate, recall, precision, ndcg and aggregate_diversity at each k, plus the
      optional metrics above.
    """
    if num_items is None and train_popularity is not None:
        num_items = len(train_popularity)
    results: dict[str, float] = {}
    for k in ks:
        results[f"hit_rate@{k}"] = hit_rate_at_k(ranked, relevant, k)
        results[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
        results[f"precision@{k}"] = precision_at_k(ranked, relevant, k)
        results[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
        results[f"aggregate_diversity@{k}"] = float(aggregate_diversity(ranked, k))
        if true_top is not None:
            results[f"true_top_k_overlap@{k}"] = true_top_k_overlap(ranked, true_top, k)
        if num_items is not None:
            results[f"coverage@{k}"] = catalog_coverage(ranked, k, num_items)
            results[f"gini@{k}"] = gini(recommendation_counts(ranked, k, num_items))
        if train_popularity is not None:
            results[f"popularity_index@{k}"] = popularity_index(ranked, k, train_popularity)
    return results


def cold_item_metrics(
    ranked: np.ndarray, relevant: Sequence[np.ndarray], cold: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """The cold-start view of one ranking: items no training example clicked.

    Args:
      ranked: int array [num_users, k_max] of item indices, best first (-1: none).
      relevant: each user's relevant item indices.
      cold: bool array [num_items], True for a cold item.
      ks: cut-offs.

    Returns:
      `users`: users with a relevant cold item; `recall@k`, `hit_rate@k`: over those
      users, with only their cold items relevant; `slot_share@k`: the share of all
      users' top-k slots that hold a cold item (the catalog's share of cold items is
      what a ranking blind to coldness gives).
    """
    cold_relevant = [r[cold[r]] if len(r) else r for r in relevant]
    users = [i for i, r in enumerate(cold_relevant) if len(r)]
    results: dict[str, float] = {"users": float(len(users))}
    for k in ks:
        top = _check_ranked(ranked, k)
        held = np.where(top >= 0, cold[np.maximum(top, 0)], False)
        results[f"slot_share@{k}"] = float(held.mean()) if top.size else 0.0
        if users:
            subset = [cold_relevant[i] for i in users]
            results[f"recall@{k}"] = recall_at_k(ranked[users], subset, k)
            results[f"hit_rate@{k}"] = hit_rate_at_k(ranked[users], subset, k)
        else:
            results[f"recall@{k}"] = results[f"hit_rate@{k}"] = 0.0
    return results
