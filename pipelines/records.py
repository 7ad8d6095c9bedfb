"""Parsing and validation of one request, user or feature record, independent of Beam.

A record that breaks a rule raises `BadRecord` with a reason; the pipeline sends it to
the dead-letter output. Repairs that lose nothing (an exposed item missing from
`recalled`, a duplicate inside a list) are made and counted instead.

Reasons (docs/dataset.md lists them with examples): bad_json, bad_encoding, bad_csv,
unreadable_file (raised while reading, see `sources`), bad_type (a field of the wrong
type), missing_id (an absent or empty id), bad_timestamp, clicked_not_exposed,
unknown_item, duplicate_item (catalog), duplicate_user (user table).
"""

import datetime
import json
from typing import Any

LIST_FIELDS = ("recalled", "exposed", "clicked")


class BadRecord(ValueError):
    """A record that cannot be used; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def require_id(record: dict[str, Any], field: str) -> str:
    """`record[field]` if it is a non-empty string.

    Raises:
      BadRecord: `missing_id` when absent or blank, `bad_type` when not a string.
    """
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRecord("missing_id", f"{field} must be a non-empty string, got {value!r}")
    if not isinstance(value, str):
        raise BadRecord("bad_type", f"{field} must be a string, got {value!r}")
    return value


def parse_timestamp(value: Any) -> int:
    """Seconds since the epoch from an int, a numeric string or an ISO-8601 string."""
    if isinstance(value, datetime.datetime):  # a Parquet timestamp column
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return int(value.timestamp())
    if isinstance(value, bool):
        raise BadRecord("bad_timestamp", f"timestamp must be a number or ISO-8601, got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            pass
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.UTC)
            return int(parsed.timestamp())
    raise BadRecord("bad_timestamp", f"timestamp must be a number or ISO-8601, got {value!r}")


def _item_list(record: dict[str, Any], field: str, counts: dict[str, int]) -> list[str]:
    value = record.get(field, [])
    if isinstance(value, str):  # CSV-style "i1|i2"
        value = [v for v in value.split("|") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRecord("bad_type", f"{field} must be a list of non-empty strings, got {value!r}")
    unique = list(dict.fromkeys(value))
    if len(unique) != len(value):
        counts["duplicates_removed"] = (
            counts.get("duplicates_removed", 0) + len(value) - len(unique)
        )
    return unique


def feature_tokens(raw: Any, field: str) -> dict[str, list[str]]:
    """{name: [tokens]} from a features object; a number becomes its decimal string.

    Raises:
      BadRecord: `bad_type` when `raw` is not an object or a value is not a string, a
        list of strings or a number.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRecord("bad_type", f"{field} must be an object, got {raw!r}")
    features = {}
    for name, value in raw.items():
        if isinstance(value, str):
            features[name] = [value]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            features[name] = [str(value)]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            features[name] = list(value)
        else:
            raise BadRecord(
                "bad_type",
                f"{field}.{name} must be a string, list of strings or number, got {value!r}",
            )
    return features


def validate_request(record: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """Checks one request and returns it normalised, with the repairs it needed.

    Args:
      record: a decoded JSON object.

    Returns:
      (request, repairs): request has request_id, user_id, timestamp (int), recalled,
      exposed, clicked (lists without duplicates, clicked ⊆ exposed ⊆ recalled) and
      user_features ({name: [tokens]}); repairs counts `duplicates_removed` and
      `exposed_added_to_recalled`.

    Raises:
      BadRecord: a rule is broken.
    """
    if not isinstance(record, dict):
        raise BadRecord("bad_type", f"a request must be a JSON object, got {type(record).__name__}")
    repairs: dict[str, int] = {}
    request = {
        "request_id": require_id(record, "request_id"),
        "user_id": require_id(record, "user_id"),
        "timestamp": parse_timestamp(record.get("timestamp")),
    }
    lists = {field: _item_list(record, field, repairs) for field in LIST_FIELDS}
    exposed = set(lists["exposed"])
    not_exposed = [item for item in lists["clicked"] if item not in exposed]
    if not_exposed:
        raise BadRecord("clicked_not_exposed", f"clicked items not exposed: {not_exposed}")
    recalled = set(lists["recalled"])
    missing = [item for item in lists["exposed"] if item not in recalled]
    if missing:
        repairs["exposed_added_to_recalled"] = len(missing)
        lists["recalled"] = lists["recalled"] + missing
    request.update(lists)
    request["user_features"] = feature_tokens(record.get("user_features"), "user_features")
    return request, repairs


def decode(payload: Any) -> Any:
    """A raw record's payload as a JSON value: JSONL text is parsed, CSV/Parquet rows pass.

    Raises:
      BadRecord: `bad_json` for text that is not JSON.
    """
    if not isinstance(payload, str):
        return payload
    try:
        return json.loads(payload)
    except json.JSONDecodeError as e:
        raise BadRecord("bad_json", f"{e.msg} at column {e.colno}") from e


def parse_request_line(line: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Decodes one JSON line and validates it (see `validate_request`)."""
    return validate_request(decode(line))


def validate_user(record: Any) -> tuple[str, dict[str, list[str]]]:
    """(user_id, {feature: [tokens]}) of one user-table row `{"user_id", "features"}`.

    Raises:
      BadRecord: a missing id or a feature of the wrong type.
    """
    if not isinstance(record, dict):
        raise BadRecord("bad_type", f"a user row must be an object, got {type(record).__name__}")
    return require_id(record, "user_id"), feature_tokens(record.get("features"), "features")
