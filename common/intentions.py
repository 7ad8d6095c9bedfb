"""Merging a user's main top-K list with the top-K lists of its intention vectors.

Multi-CLRec (Zhou et al. 2021) gives each user H intention vectors beside the main query
embedding. Retrieval searches the index once per vector and merges the H + 1 lists by
round robin: the main list's best, intention 1's best, ..., intention H's best, then
every list's second, and so on, skipping an item already taken. So each list gets an
equal quota of ⌈k / (H + 1)⌉ of the k slots (a list that runs out of new items leaves its
turn to the others), the main embedding's favourites always come first, and no single
intention fills the list. Both the evaluation (trainer/) and the service (serving/) merge
with this one function, so what is measured is what is served.
"""

from collections.abc import Sequence

import numpy as np


def merge_rankings(
    rankings: Sequence[np.ndarray], k: int, scores: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Round-robin merge of per-vector rankings.

    Args:
      rankings: H + 1 arrays `[num_users, k_each]` of item indices, best first, the main
        embedding's first; -1 marks an empty slot.
      k: items per user in the merged list.
      scores: optional, the same shapes: each item's score under the vector that found it.

    Returns:
      `[num_users, k]` item indices (-1 padded), `[num_users, k]` the list each came from
      (0 = main, h = intention h; -1 padded) and, with `scores`, `[num_users, k]` their
      scores (-inf padded).
    """
    if not rankings:
        raise ValueError("no rankings to merge")
    shapes = {r.shape for r in rankings} | ({s.shape for s in scores} if scores else set())
    if len(shapes) != 1 or len(rankings[0].shape) != 2:
        raise ValueError(f"rankings and scores must all be [num_users, k_each], got {shapes}")
    lists = len(rankings)
    num_users = rankings[0].shape[0]
    # [users, depth * lists] in round-robin order: every list's best, then every second...
    order = np.stack(rankings, axis=2).reshape(num_users, -1)
    taken_at = np.full((num_users, k), -1, dtype=np.int64)  # position in `order`
    for user in range(num_users):
        seen: set[int] = set()
        filled = 0
        for position, item in enumerate(order[user].tolist()):
            if item < 0 or item in seen:
                continue
            seen.add(item)
            taken_at[user, filled] = position
            filled += 1
            if filled == k:
                break
    padded = taken_at < 0
    safe = np.maximum(taken_at, 0)
    merged = np.where(padded, -1, np.take_along_axis(order, safe, axis=1))
    origin = np.where(padded, -1, safe % lists)
    if scores is None:
        return merged, origin, None
    flat = np.stack(scores, axis=2).reshape(num_users, -1)
    return merged, origin, np.where(padded, -np.inf, np.take_along_axis(flat, safe, axis=1))
