"""Raw user features -> the padded string batch the query tower's signature takes."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from common.contracts import USER_ID

PAD = b""


def _tokens(value: Any) -> list[bytes]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        value = [value]
    return [v if isinstance(v, bytes) else str(v).encode() for v in value]


def feature_batch(
    users: Sequence[Mapping[str, Any]], input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Signature inputs for `users`.

    Args:
      users: one dict per user keyed by signature input name: "user_id" (a string),
        "history" and "user.<name>" (a string or a list of strings). An absent input is
        empty, which the tower embeds as nothing (history) or padding.
      input_names: the signature's inputs, "user_id" first.

    Returns:
      {"user_id": `[batch_size]` bytes, other inputs: `[batch_size, width]` bytes padded
      with b"" (width >= 1)}.
    """
    batch = {}
    for name in input_names:
        if name == USER_ID:
            batch[name] = np.array(
                [_tokens(u.get(name))[0] if u.get(name) is not None else PAD for u in users],
                dtype=object,
            )
            continue
        rows = [_tokens(u.get(name)) for u in users]
        width = max(1, max((len(r) for r in rows), default=0))
        padded = np.full((len(rows), width), PAD, dtype=object)
        for i, row in enumerate(rows):
            padded[i, : len(row)] = row
        batch[name] = padded
    return batch
