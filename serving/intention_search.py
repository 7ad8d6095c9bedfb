"""Searching the item index with a query's main embedding and its intention vectors.

A Multi-CLRec export's query tower returns H intention vectors `[batch, H, dim]` beside
the embedding. With `intentions` on, the index is searched once per vector (H + 1
searches of k) and the lists are merged by `common.intentions.merge_rankings`: round
robin, main list first, each list an equal quota of ⌈k / (H + 1)⌉ slots, duplicates
skipped. Any other export is searched with the embedding alone.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from common.contracts import EMBEDDING_OUTPUT, INTENTIONS_OUTPUT
from common.intentions import merge_rankings
from serving.item_index import ItemIndex


def search_outputs(
    index: ItemIndex,
    outputs: Mapping[str, np.ndarray],
    k: int,
    exclude: Sequence[Sequence[int]] | None = None,
    intentions: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The k best rows per query from the query tower's `outputs`.

    Returns:
      (`[batch, k]` rows, -1 padded; their scores; `[batch, k]` which vector found each,
      0 = the embedding, h = intention h, or None when only the embedding was searched).
    """
    found, scores = index.search(outputs[EMBEDDING_OUTPUT], k, exclude)
    vectors = outputs.get(INTENTIONS_OUTPUT)
    if not intentions or vectors is None:
        return found, scores, None
    lists, list_scores = [found], [scores]
    for h in range(vectors.shape[1]):
        rows, values = index.search(np.ascontiguousarray(vectors[:, h]), k, exclude)
        lists.append(rows)
        list_scores.append(values)
    merged, origin, merged_scores = merge_rankings(lists, k, list_scores)
    return merged, merged_scores, origin
