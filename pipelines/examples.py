"""Training and evaluation examples: space labels per request, history per user.

Work is split around the shuffle by user. `request_positives` runs on each request
alone: positives are its clicks, Space A (exposed, not clicked) and Space B (recalled,
not exposed) are sampled per positive by a hash of the request id and the positive, so
reruns choose the same items; only this compact record is shuffled, and a request without
a click is not shuffled at all. `user_examples` then sees one user's records and adds the
history: the user's last clicks strictly before the request's timestamp, so no example
sees its own, a simultaneous or a later click.

Cold items (`data.cold_item_fraction`): an item whose `md5(item_id)` falls in that lowest
share of the hash range is cold, and every example whose positive is a cold item is
eval, whatever the split rule, so no cold item has a training click.
"""

import collections
import dataclasses
import hashlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from common.contracts import (
    BASE_FEATURE_SPEC,
    EVAL,
    FLOAT_VECTOR,
    HISTORY,
    ITEM_ID,
    NUM_SPACE_A,
    NUM_SPACE_B,
    REQUEST_ID,
    SPACE_A,
    SPACE_B,
    STRING_LIST,
    TIMESTAMP,
    TRAIN,
    USER_FEATURE_PREFIX,
    USER_ID,
)
from pipelines import tf_example


@dataclasses.dataclass(frozen=True)
class ExampleOptions:
    """How examples are cut from requests (mirrors `DataConfig`)."""

    history_length: int = 20
    num_a: int = 1
    num_b: int = 4
    split: str = "leave-last-click-out"
    eval_from: int = 0
    cold_item_fraction: float = 0.0


def is_cold(item_id: str, fraction: float) -> bool:
    """Whether `item_id` is a cold item: the first 8 bytes of its md5, as a share of
    2**64, are below `fraction` (so about that share of any catalog is cold)."""
    if fraction <= 0:
        return False
    digest = hashlib.md5(item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def _hash_order(items: Iterable[str], salt: str) -> list[str]:
    key = lambda item: hashlib.md5(f"{salt}|{item}".encode()).hexdigest()  # noqa: E731
    return sorted(items, key=key)


def request_positives(request: dict[str, Any], options: ExampleOptions) -> dict[str, Any]:
    """The part of a validated request that examples need, negatives already sampled.

    Args:
      request: from `records.validate_request`.
      options: negatives kept per positive.

    Returns:
      {"request_id", "user_id", "timestamp", "user_features", "num_space_a",
       "num_space_b", "positives": [(item, space_a sample, space_b sample)]}.
    """
    clicked = set(request["clicked"])
    exposed = set(request["exposed"])
    space_a = [item for item in request["exposed"] if item not in clicked]
    space_b = [item for item in request["recalled"] if item not in exposed]
    positives = []
    for item in request["clicked"]:
        salt = f"{request['request_id']}|{item}"
        positives.append(
            (
                item,
                _hash_order(space_a, salt)[: options.num_a],
                _hash_order(space_b, salt)[: options.num_b],
            )
        )
    return {
        "request_id": request["request_id"],
        "user_id": request["user_id"],
        "timestamp": request["timestamp"],
        "user_features": request["user_features"],
        "num_space_a": len(space_a),
        "num_space_b": len(space_b),
        "positives": positives,
    }


def _split_of(options: ExampleOptions, timestamp: int, is_held_out: bool, item: str) -> str:
    if is_cold(item, options.cold_item_fraction):
        return EVAL
    if options.split == "time":
        return EVAL if timestamp >= options.eval_from else TRAIN
    return EVAL if is_held_out else TRAIN


def user_examples(
    requests: Iterable[dict[str, Any]],
    options: ExampleOptions,
    profile: dict[str, list[str]] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (split, example) for every click of one user.

    Args:
      requests: the user's records from `request_positives`, any order.
      options: history length and the split rule.
      profile: the user's row of the user table; fills features a request lacks.

    Yields:
      ("train" | "eval", example dict with the keys of BASE_FEATURE_SPEC plus
      "user.<name>": token lists (categorical) or float lists (numeric, vector), a
      feature missing from both the request and the profile left out).
    """
    ordered = sorted(requests, key=lambda r: (r["timestamp"], r["request_id"]))
    held_out = None  # leave-last-click-out: the last positive of the last clicked request
    for request in reversed(ordered):
        if request["positives"]:
            held_out = (request["request_id"], request["positives"][-1][0])
            break
    recent: collections.deque[str] = collections.deque(maxlen=options.history_length)
    for timestamp, same_time in itertools.groupby(ordered, key=lambda r: r["timestamp"]):
        history = list(recent)  # clicks strictly before `timestamp`
        group = list(same_time)
        for request in group:
            features = {**(profile or {}), **request["user_features"]}
            user_features = {
                f"{USER_FEATURE_PREFIX}{name}": tokens for name, tokens in sorted(features.items())
            }
            for item, space_a, space_b in request["positives"]:
                is_held_out = (request["request_id"], item) == held_out
                yield (
                    _split_of(options, timestamp, is_held_out, item),
                    {
                        REQUEST_ID: request["request_id"],
                        USER_ID: request["user_id"],
                        ITEM_ID: item,
                        TIMESTAMP: timestamp,
                        HISTORY: history,
                        SPACE_A: list(space_a),
                        SPACE_B: list(space_b),
                        NUM_SPACE_A: request["num_space_a"],
                        NUM_SPACE_B: request["num_space_b"],
                        **user_features,
                    },
                )
        if options.history_length:
            recent.extend(item for request in group for item, _, _ in request["positives"])


def feature_spec(
    user_feature_names: Iterable[str], dense_dims: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """The manifest's feature spec: base features plus one entry per user feature, a
    token list, or for a numeric or vector feature (`dense_dims`: name -> dim) a
    FLOAT_VECTOR of its dim."""
    dense_dims = dense_dims or {}
    spec: dict[str, dict[str, Any]] = dict(BASE_FEATURE_SPEC)
    for name in sorted(user_feature_names):
        dim = dense_dims.get(name)
        spec[f"{USER_FEATURE_PREFIX}{name}"] = (
            STRING_LIST if dim is None else {**FLOAT_VECTOR, "dim": dim}
        )
    return spec


def to_tf_example(example: dict[str, Any]) -> bytes:
    """Serialises an example dict as a `tf.train.Example`: ints as int64, strings and
    string lists as bytes, float lists (numeric and vector features) as floats. Absent
    categorical user features parse as empty lists (VarLenFeature), absent dense ones
    as NaN (the trainer's default)."""
    return tf_example.serialize_example(example)
