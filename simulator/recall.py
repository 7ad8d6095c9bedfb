"""The legacy recall stage of the simulator: popularity-biased sampling without a matrix.

Every draw is a uniform number inside an interval of the cumulative popularity prior of
the items sorted by cluster: the whole range for a corpus draw, the cluster's slice for a
favourite-cluster draw. `searchsorted` turns it into an item, so a chunk of requests costs
O(chunk * draws * log num_items) and never a [users, items] matrix.
"""

from __future__ import annotations

import numpy as np

from simulator.world import World

# Margin of expected distinct items over recall_size before draws are considered enough.
_SPARE_STDS = 3.0


class RecallSampler:
    """Draws `recall_size` distinct items per request, biased to popular items.

    Sampling is successive (draw, drop repeats, keep the first `recall_size` distinct), the
    same law as `Generator.choice(replace=False, p=...)`, which serves as the exact
    fallback for the rare request whose draws run short.
    """

    def __init__(self, world: World, recall_size: int, favourite_share: float) -> None:
        """Precomputes the per-cluster slices of the cumulative prior.

        Args:
          world: the world whose prior and clusters to use.
          recall_size: distinct items per request, <= num_items.
          favourite_share: probability that a draw comes from a favourite cluster.
        """
        self._world = world
        self._recall_size = recall_size
        self._favourite_share = favourite_share
        self._order = np.argsort(world.item_cluster, kind="stable")
        self._cumulative = np.cumsum(world.popularity_prior[self._order])
        clusters = np.arange(world.config.num_clusters)
        sorted_cluster = world.item_cluster[self._order]
        self._start = np.searchsorted(sorted_cluster, clusters, side="left")
        self._end = np.searchsorted(sorted_cluster, clusters, side="right")
        self._low = np.where(self._start > 0, self._cumulative[self._start - 1], 0.0)
        self._high = self._cumulative[self._end - 1]
        self._draws = _draws_needed(world.popularity_prior, recall_size, 1.0 - favourite_share)

    @property
    def draws(self) -> int:
        """Draws made per request before the fallback."""
        return self._draws

    def sample(self, rng: np.random.Generator, users: np.ndarray, day: int = 0) -> np.ndarray:
        """Recalls items for a chunk of requests.

        Args:
          rng: the chunk's generator.
          users: int array [num_requests] of user indices.
          day: the requests' day: items that arrive later are never recalled (their draws
            count as repeats).

        Returns:
          int64 [num_requests, recall_size] distinct items per row, in draw order.
        """
        world, draws = self._world, self._draws
        shape = (users.size, draws)
        from_cluster = rng.random(shape) < self._favourite_share
        # Pick a favourite slot by inverse CDF of the user's cluster weights.
        slot_cdf = np.cumsum(world.user_cluster_weights[users], axis=1)
        slot = (rng.random(shape)[:, :, None] > slot_cdf[:, None, :-1]).sum(axis=2)
        cluster = np.take_along_axis(world.user_clusters[users], slot, axis=1)
        low = np.where(from_cluster, self._low[cluster], 0.0)
        high = np.where(from_cluster, self._high[cluster], self._cumulative[-1])
        first = np.where(from_cluster, self._start[cluster], 0)
        last = np.where(from_cluster, self._end[cluster], self._order.size) - 1
        point = low + rng.random(shape) * (high - low)
        # Clip: rounding can put a point on a slice edge, which belongs to a neighbour.
        position = np.clip(np.searchsorted(self._cumulative, point, side="right"), first, last)
        items = self._order[position]

        by_item = np.argsort(items, axis=1, kind="stable")
        ordered = np.take_along_axis(items, by_item, axis=1)
        new = np.ones(shape, dtype=bool)
        new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        is_first = np.empty(shape, dtype=bool)
        np.put_along_axis(is_first, by_item, new, axis=1)  # first draw of each distinct item
        is_first &= world.item_arrival_day[items] <= day
        keep = is_first & (np.cumsum(is_first, axis=1) <= self._recall_size)
        short = keep.sum(axis=1) < self._recall_size
        recalled = np.empty((users.size, self._recall_size), dtype=np.int64)
        full = ~short
        recalled[full] = items[full][keep[full]].reshape(-1, self._recall_size)
        for row in np.flatnonzero(short):
            recalled[row] = rng.choice(
                world.config.num_items,
                size=self._recall_size,
                replace=False,
                p=self._mixture(int(users[row]), day),
            )
        return recalled

    def _mixture(self, user: int, day: int = 0) -> np.ndarray:
        """The per-draw item distribution of `user` [num_items] over the items arrived by
        `day` (the fallback path, and the true recall propensities)."""
        world = self._world
        probability = (1.0 - self._favourite_share) * world.popularity_prior
        for cluster, weight in zip(
            world.user_clusters[user], world.user_cluster_weights[user], strict=True
        ):
            in_cluster = world.item_cluster == cluster
            mass = self._high[cluster] - self._low[cluster]
            probability = probability + (
                self._favourite_share * weight * world.popularity_prior * in_cluster / mass
            )
        probability = probability * (world.item_arrival_day <= day)
        return probability / probability.sum()


def _draws_needed(prior: np.ndarray, recall_size: int, corpus_share: float) -> int:
    """Smallest draw count whose corpus draws alone expect enough distinct items.

    Expected distinct items of m draws = sum_i 1 - (1 - p_i)^m. Favourite-cluster draws
    only add items, so counting corpus draws alone errs on the safe side. The target is
    recall_size plus a few standard deviations; capped at 64 * recall_size, past which
    the exact fallback is cheaper.
    """
    log_miss = np.log1p(-np.minimum(prior, 1 - 1e-12))

    def expected_distinct(draws: int) -> float:
        return float(-np.expm1(draws * corpus_share * log_miss).sum())

    target = min(recall_size + _SPARE_STDS * np.sqrt(recall_size) + 5, 0.99 * prior.size)
    cap = 64 * recall_size
    low, high = recall_size, recall_size
    while expected_distinct(high) < target and high < cap:
        low, high = high, min(2 * high, cap)
    while low < high:
        middle = (low + high) // 2
        if expected_distinct(middle) >= target:
            high = middle
        else:
            low = middle + 1
    return high
