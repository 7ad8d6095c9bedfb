"""A logged legacy recall stage for logs that have none (MovieLens-100K).

MovieLens says which movies a user rated (exposed) but not which ones a recall stage
had offered; Space B (recalled, not exposed) needs them. This module plays back such a
stage, as a live system would have run it, in timestamp order:

  score(j) = w * pop(j) / max pop  +  (1 - w) * co(j) / max co
  pop(j)   = ratings of item j so far (all users)
  co(j)    = sum over the user's last RECALL_HISTORY rated items i of C(i, j), where
             C(i, j) counts users who rated both i and j so far

`recalled` = the request's exposed items + the `recall_size` best-scored other items
the user has not rated before (ties to the lower item index). "So far" means strictly
before the request's timestamp: all requests of one timestamp are recalled first, then
their ratings are added, so a recall never sees its own or a later rating (a test
truncates the log and checks nothing earlier changes). Co-occurrence is a dense
[num_items, num_items] int32 matrix, fine for MovieLens's 1,682 items (11 MB).
"""

import numpy as np

RECALL_HISTORY = 20


class LegacyRecall:
    """Popularity blended with item co-occurrence, updated as ratings stream in.

    Args:
      num_items: items are integer indices in [0, num_items).
      recall_size: items recalled beyond the exposed ones.
      popularity_weight: w in the score above, in [0, 1].
      history: how many of the user's latest rated items drive co-occurrence.
    """

    def __init__(
        self,
        num_items: int,
        recall_size: int,
        popularity_weight: float,
        history: int = RECALL_HISTORY,
    ):
        if not 0 <= popularity_weight <= 1:
            raise ValueError(f"popularity_weight must be in [0, 1], got {popularity_weight}")
        self._recall_size = recall_size
        self._weight = popularity_weight
        self._history = history
        self._popularity = np.zeros(num_items, dtype=np.int64)
        self._cooccurrence = np.zeros((num_items, num_items), dtype=np.int32)
        self._rated: dict[str, list[int]] = {}

    def recall(self, user: str, exposed: list[int]) -> list[int]:
        """The items recalled beyond `exposed` for `user` from what was observed so far.

        Returns:
          Up to `recall_size` item indices, best first, none rated by the user before
          and none in `exposed`.
        """
        if self._recall_size == 0:
            return []
        rated = self._rated.get(user, [])
        score = self._weight * self._popularity / max(int(self._popularity.max()), 1)
        if rated and self._weight < 1:
            co = self._cooccurrence[rated[-self._history :]].sum(axis=0, dtype=np.int64)
            score = score + (1 - self._weight) * co / max(int(co.max()), 1)
        allowed = np.ones(score.shape[0], dtype=bool)
        allowed[rated] = False
        allowed[exposed] = False
        candidates = np.flatnonzero(allowed)
        # lexsort sorts by the last key first: best score, then the lower index.
        order = np.lexsort((candidates, -score[candidates]))
        return candidates[order[: self._recall_size]].tolist()

    def observe(self, user: str, items: list[int]) -> None:
        """Adds one request's ratings (call after every recall of that timestamp)."""
        new = np.asarray(items, dtype=np.int64)
        if new.size == 0:
            return
        previous = np.asarray(self._rated.get(user, []), dtype=np.int64)
        self._popularity[new] += 1
        if previous.size:
            self._cooccurrence[np.ix_(previous, new)] += 1
            self._cooccurrence[np.ix_(new, previous)] += 1
        self._cooccurrence[np.ix_(new, new)] += 1
        self._cooccurrence[new, new] -= 1  # an item does not co-occur with itself
        self._rated.setdefault(user, []).extend(new.tolist())
