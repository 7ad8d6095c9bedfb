"""Training and evaluation examples from one user's requests.

One example per click. Its history holds the user's clicks strictly before the
request's timestamp, so no example sees its own or a later click. Space A (exposed,
not clicked) and Space B (recalled, not exposed) negatives are sampled per positive by a
hash of the request and the positive, so reruns choose the same ones.
"""

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

TRAIN = "train"
EVAL = "eval"
USER_FEATURE_PREFIX = "user."

# The example layout, written into manifest.json for the trainer (the contract).
SCALAR_STRING = {"dtype": "string", "shape": "scalar"}
SCALAR_INT = {"dtype": "int64", "shape": "scalar"}
STRING_LIST = {"dtype": "string", "shape": "list"}
BASE_FEATURE_SPEC = {
    "request_id": SCALAR_STRING,
    "user_id": SCALAR_STRING,
    "item_id": SCALAR_STRING,
    "timestamp": SCALAR_INT,
    "history": STRING_LIST,
    "space_a": STRING_LIST,
    "space_b": STRING_LIST,
    "num_space_a": SCALAR_INT,
    "num_space_b": SCALAR_INT,
}


@dataclasses.dataclass(frozen=True)
class ExampleOptions:
    """How examples are cut from requests (mirrors `DataConfig`)."""

    history_length: int = 20
    num_a: int = 1
    num_b: int = 4
    split: str = "leave-last-click-out"
    eval_from: int = 0


def _hash_order(items: Iterable[str], salt: str) -> list[str]:
    key = lambda item: hashlib.md5(f"{salt}|{item}".encode()).hexdigest()  # noqa: E731
    return sorted(items, key=key)


def _eval_click(requests: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(request_id, item) of the user's last click, for leave-last-click-out."""
    for request in reversed(requests):
        if request["clicked"]:
            return request["request_id"], request["clicked"][-1]
    return None


def user_examples(
    requests: Iterable[dict[str, Any]], options: ExampleOptions
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (split, example) for every click of one user.

    Args:
      requests: the user's validated requests (see `records.validate_request`), any order.
      options: history length, negatives per positive and the split rule.

    Yields:
      ("train" | "eval", example dict with the keys of BASE_FEATURE_SPEC plus
      "user.<name>" token lists).
    """
    ordered = sorted(requests, key=lambda r: (r["timestamp"], r["request_id"]))
    held_out = _eval_click(ordered) if options.split == "leave-last-click-out" else None
    clicks: list[tuple[int, str]] = []  # (timestamp, item), in time order
    for request in ordered:
        timestamp = request["timestamp"]
        history = [item for ts, item in clicks if ts < timestamp][-options.history_length :]
        if options.history_length == 0:
            history = []
        clicked = set(request["clicked"])
        exposed = set(request["exposed"])
        space_a = [item for item in request["exposed"] if item not in clicked]
        space_b = [item for item in request["recalled"] if item not in exposed]
        features = {
            f"{USER_FEATURE_PREFIX}{name}": tokens
            for name, tokens in sorted(request["user_features"].items())
        }
        for item in request["clicked"]:
            salt = f"{request['request_id']}|{item}"
            example = {
                "request_id": request["request_id"],
                "user_id": request["user_id"],
                "item_id": item,
                "timestamp": timestamp,
                "history": history,
                "space_a": _hash_order(space_a, salt)[: options.num_a],
                "space_b": _hash_order(space_b, salt)[: options.num_b],
                "num_space_a": len(space_a),
                "num_space_b": len(space_b),
                **features,
            }
            if options.split == "time":
                split = EVAL if timestamp >= options.eval_from else TRAIN
            else:
                split = EVAL if (request["request_id"], item) == held_out else TRAIN
            yield split, example
        clicks.extend((timestamp, item) for item in request["clicked"])


def feature_spec(user_feature_names: Iterable[str]) -> dict[str, dict[str, str]]:
    """The manifest's feature spec: base features plus one token list per user feature."""
    spec = dict(BASE_FEATURE_SPEC)
    for name in sorted(user_feature_names):
        spec[f"{USER_FEATURE_PREFIX}{name}"] = STRING_LIST
    return spec


def to_tf_example(example: dict[str, Any]) -> bytes:
    """Serialises an example dict as a `tf.train.Example`: ints as int64, strings and
    string lists as bytes. Absent user features parse as empty lists (VarLenFeature)."""
    from tensorflow.core.example import example_pb2, feature_pb2  # noqa: PLC0415

    features = {}
    for name, value in sorted(example.items()):
        if isinstance(value, int):
            features[name] = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))
        else:
            values = [value] if isinstance(value, str) else value
            encoded = [v.encode() for v in values]
            features[name] = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=encoded))
    proto = example_pb2.Example(features=feature_pb2.Features(feature=features))
    return proto.SerializeToString(deterministic=True)
