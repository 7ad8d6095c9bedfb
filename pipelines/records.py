"""Parsing and validation of one request, user or feature record, independent of Beam.

A record that breaks a rule raises `BadRecord` with a reason; the pipeline sends it to
the dead-letter output. Repairs that lose nothing (an exposed item missing from
`recalled`, a duplicate inside a list) are made and counted instead. `failure` turns
any other exception met while validating one row into a reason too, so no single row
can stop the pipeline.

Reasons (docs/dataset.md lists them with examples): bad_json, bad_encoding, bad_csv,
unreadable_file and truncated_gzip (raised while reading, see `sources`), too_large (a
row, id or token over its size limit), too_deep (nested beyond the recursion limit),
bad_type (a field of the wrong type), missing_id (an absent or empty id),
bad_characters (a control character in an id or token, a path separator in a feature
name), bad_timestamp, timestamp_out_of_range, clicked_not_exposed, unknown_item,
duplicate_item (catalog), duplicate_user (user table), duplicate_request (see
`duplicates`), invalid_record (any other exception, named).

Feature values are checked against their kind (`feature_kinds`; the detail names the
field, "user_features.age: ..."): not_a_number (a numeric value, or a vector element,
that is not a number: a string that does not parse as one, a boolean, a list or an
object), not_finite (NaN, an infinity, or beyond float32's range), wrong_dimension (a
vector of another length than its dim), out_of_log_domain (a `data.log_features` value
<= -1, which log1p cannot take), bad_type (a vector that is not a list, a text that is
not a string). A numeric string ("3.5", as CSV cells always are) is a number; `null` or
an absent feature is a missing value, never an error; an empty text is missing too.
"""

import dataclasses
import datetime
import json
import math
import re
import reprlib
from typing import Any

from common.contracts import NUMERIC, TEXT, USER_FEATURE_PREFIX, VECTOR
from pipelines.feature_kinds import FLOAT32_MAX, FeatureKind, FeatureKinds

LIST_FIELDS = ("recalled", "exposed", "clicked")
# Ids and tokens end up one per line in vocab/*.txt and item_frequency.tsv.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PATH_SEPARATORS = re.compile(r"[/\\]")  # a feature name is part of a file name
_MAX_TIMESTAMP_TEXT = 64
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel = 3
_ALL_CATEGORICAL = FeatureKinds()


@dataclasses.dataclass(frozen=True)
class RecordLimits:
    """What a row may hold (mirrors the `data` settings of the same names).

    Attributes:
      min_timestamp, max_timestamp: the plausible request times, seconds since the epoch
        (both inclusive); others are `timestamp_out_of_range`.
      max_id_bytes: UTF-8 bytes of an id, a feature name or a token.
      max_row_bytes: bytes of a raw line or row (checked by `sources` before parsing).
    """

    min_timestamp: int = 0
    max_timestamp: int = 4_102_444_800  # 2100-01-01T00:00:00Z
    max_id_bytes: int = 256
    max_row_bytes: int = 1 << 20


DEFAULT_LIMITS = RecordLimits()


class BadRecord(ValueError):
    """A record that cannot be used; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def shown(value: Any) -> str:
    """A short repr of `value` for a detail message (bounded in size and depth)."""
    return _SHOWN.repr(value)


def failure(error: Exception) -> tuple[str, str]:
    """(reason, detail) of any exception raised while validating one row."""
    if isinstance(error, BadRecord):
        return error.reason, error.detail
    if isinstance(error, RecursionError):
        return "too_deep", "nested deeper than the recursion limit"
    try:
        message = str(error)[:200]
    except Exception:  # a broken __str__ must not stop the row's dead letter
        message = ""
    return "invalid_record", f"{type(error).__name__}: {message}"


def check_texts(values: list[str], field: str, max_bytes: int) -> None:
    """Strings that may become ids or tokens: valid UTF-8, at most `max_bytes` each, no
    control characters.

    Raises:
      BadRecord: `bad_encoding` (a lone surrogate), `too_large`, `bad_characters`.
    """
    joined = "".join(values)  # each test below is one pass in C over the whole list
    if joined.isascii():
        longest = len(joined) if len(joined) <= max_bytes else max(map(len, values))
    else:
        try:
            longest = max((len(v.encode()) for v in values), default=0)
        except UnicodeEncodeError as e:
            raise BadRecord("bad_encoding", f"{field} is not valid UTF-8: {e.reason}") from e
    if longest > max_bytes:
        raise BadRecord(
            "too_large", f"{field}: a value of {longest} bytes > data.max_id_bytes {max_bytes}"
        )
    control = None if joined.isprintable() else _CONTROL.search(joined)
    if control:
        raise BadRecord(
            "bad_characters", f"{field} holds the control character {control.group()!r}"
        )


def require_id(record: dict[str, Any], field: str, limits: RecordLimits = DEFAULT_LIMITS) -> str:
    """`record[field]` if it is a non-empty string within the limits.

    Raises:
      BadRecord: `missing_id` when absent or blank, `bad_type` when not a string, and
        the reasons of `check_texts`.
    """
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRecord("missing_id", f"{field} must be a non-empty string, got {shown(value)}")
    if not isinstance(value, str):
        raise BadRecord("bad_type", f"{field} must be a string, got {shown(value)}")
    check_texts([value], field, limits.max_id_bytes)
    return value


def _bad_timestamp(value: Any) -> BadRecord:
    return BadRecord(
        "bad_timestamp", f"timestamp must be a finite number or ISO-8601, got {shown(value)}"
    )


def _from_datetime(value: datetime.datetime, raw: Any) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    try:
        return int(value.timestamp())
    except (OverflowError, ValueError, OSError) as e:
        raise _bad_timestamp(raw) from e


def parse_timestamp(value: Any) -> int:
    """Seconds since the epoch from an int, a finite float, a numeric string, an ISO-8601
    string or a datetime (a Parquet timestamp column).

    Raises:
      BadRecord: `bad_timestamp` for anything else, NaN and infinities included.
    """
    if isinstance(value, datetime.datetime):
        return _from_datetime(value, value)
    if isinstance(value, bool):
        raise _bad_timestamp(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):  # JSON's 1e400 parses as inf
            raise _bad_timestamp(value)
        return int(value)
    if isinstance(value, str) and len(value) <= _MAX_TIMESTAMP_TEXT:
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if not math.isfinite(number):
                raise _bad_timestamp(value)
            return int(number)
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return _from_datetime(parsed, value)
    raise _bad_timestamp(value)


def check_timestamp(timestamp: int, limits: RecordLimits) -> int:
    """`timestamp` if within [min_timestamp, max_timestamp].

    Raises:
      BadRecord: `timestamp_out_of_range`.
    """
    if not limits.min_timestamp <= timestamp <= limits.max_timestamp:
        raise BadRecord(
            "timestamp_out_of_range",
            f"timestamp {shown(timestamp)} is outside [data.min_timestamp "
            f"{limits.min_timestamp}, data.max_timestamp {limits.max_timestamp}]",
        )
    return timestamp


def _item_list(
    record: dict[str, Any], field: str, counts: dict[str, int], limits: RecordLimits
) -> list[str]:
    value = record.get(field, [])
    if isinstance(value, str):  # CSV-style "i1|i2"
        value = [v for v in value.split("|") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRecord(
            "bad_type", f"{field} must be a list of non-empty strings, got {shown(value)}"
        )
    check_texts(value, field, limits.max_id_bytes)
    unique = list(dict.fromkeys(value))
    if len(unique) != len(value):
        counts["duplicates_removed"] = (
            counts.get("duplicates_removed", 0) + len(value) - len(unique)
        )
    return unique


def _feature_name(name: Any, field: str, limits: RecordLimits) -> str:
    if not isinstance(name, str) or not name:
        raise BadRecord("bad_type", f"{field}: a feature name must be a non-empty string")
    check_texts([name], f"{field} name", limits.max_id_bytes)
    if _PATH_SEPARATORS.search(name):
        raise BadRecord("bad_characters", f"{field} name {shown(name)} holds a path separator")
    return name


def _number(value: Any, field: str) -> float:
    if isinstance(value, str) and "_" not in value:  # float() would take "1_000"
        try:
            number = float(value)
        except ValueError:
            number = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int past float's range
            number = math.inf
    else:
        number = None
    if number is None:
        raise BadRecord("not_a_number", f"{field}: expected a number, got {shown(value)}")
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise BadRecord("not_finite", f"{field}: {shown(value)} is not a finite float32")
    return number


def feature_value(value: Any, kind: FeatureKind, field: str, limits: RecordLimits) -> Any:
    """One feature value checked against its kind (see the module docstring).

    Returns:
      None for a missing value; else categorical: [tokens] (a number becomes its
      decimal string), numeric: [float], vector: [`kind.dim` floats], text: the string.

    Raises:
      BadRecord: the value does not fit the kind.
    """
    if value is None:
        return None
    if kind.kind == NUMERIC:
        number = _number(value, field)
        if kind.log and number <= -1:
            raise BadRecord(
                "out_of_log_domain",
                f"{field}: {shown(value)} <= -1, which log1p cannot take (data.log_features)",
            )
        return [number]
    if kind.kind == VECTOR:
        if not isinstance(value, list):
            raise BadRecord(
                "bad_type", f"{field}: expected a list of {kind.dim} numbers, got {shown(value)}"
            )
        if len(value) != kind.dim:
            raise BadRecord(
                "wrong_dimension", f"{field}: expected {kind.dim} numbers, got {len(value)}"
            )
        return [_number(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if kind.kind == TEXT:
        if not isinstance(value, str):
            raise BadRecord("bad_type", f"{field}: expected a string, got {shown(value)}")
        try:
            value.encode()
        except UnicodeEncodeError as e:
            raise BadRecord("bad_encoding", f"{field} is not valid UTF-8: {e.reason}") from e
        return value if value.strip() else None
    if isinstance(value, str):
        tokens = [value]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        tokens = [str(value)]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        tokens = list(value)
    else:
        raise BadRecord(
            "bad_type",
            f"{field} must be a string, list of strings or number, got {shown(value)}",
        )
    check_texts(tokens, field, limits.max_id_bytes)
    return tokens


def feature_values(
    raw: Any,
    field: str,
    limits: RecordLimits = DEFAULT_LIMITS,
    kinds: FeatureKinds = _ALL_CATEGORICAL,
    prefix: str = USER_FEATURE_PREFIX,
) -> dict[str, Any]:
    """{name: value} of a features object, each checked by `feature_value` against its
    kind in `kinds` (looked up as `prefix` + name); missing values are left out.

    Raises:
      BadRecord: `bad_type` when `raw` is not an object; a bad name (the reasons of
        `check_texts`, or a path separator: `bad_characters`); a value that does not fit
        its kind.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRecord("bad_type", f"{field} must be an object, got {shown(raw)}")
    features = {}
    for name, value in raw.items():
        name = _feature_name(name, field, limits)
        checked = feature_value(value, kinds.of(prefix, name), f"{field}.{name}", limits)
        if checked is not None:
            features[name] = checked
    return features


def feature_tokens(
    raw: Any, field: str, limits: RecordLimits = DEFAULT_LIMITS
) -> dict[str, list[str]]:
    """{name: [tokens]} from a features object read as all categorical: a number becomes
    its decimal string, a null is missing (see `feature_values`).

    Raises:
      BadRecord: `bad_type` when `raw` is not an object or a value is not a string, a
        list of strings or a number; the reasons of `check_texts` for names and tokens.
    """
    return feature_values(raw, field, limits)


def validate_request(
    record: Any, limits: RecordLimits = DEFAULT_LIMITS, kinds: FeatureKinds = _ALL_CATEGORICAL
) -> tuple[dict[str, Any], dict[str, int]]:
    """Checks one request and returns it normalised, with the repairs it needed.

    Args:
      record: a decoded JSON object.
      limits: sizes and the timestamp window.
      kinds: the user features' kinds (others are categorical).

    Returns:
      (request, repairs): request has request_id, user_id, timestamp (int), recalled,
      exposed, clicked (lists without duplicates, clicked ⊆ exposed ⊆ recalled) and
      user_features ({name: value} as `feature_value` returns it, missing ones left
      out); repairs counts `duplicates_removed` and
      `exposed_added_to_recalled`.

    Raises:
      BadRecord: a rule is broken.
    """
    if not isinstance(record, dict):
        raise BadRecord("bad_type", f"a request must be a JSON object, got {type(record).__name__}")
    repairs: dict[str, int] = {}
    request = {
        "request_id": require_id(record, "request_id", limits),
        "user_id": require_id(record, "user_id", limits),
        "timestamp": check_timestamp(parse_timestamp(record.get("timestamp")), limits),
    }
    lists = {field: _item_list(record, field, repairs, limits) for field in LIST_FIELDS}
    exposed = set(lists["exposed"])
    not_exposed = [item for item in lists["clicked"] if item not in exposed]
    if not_exposed:
        raise BadRecord("clicked_not_exposed", f"clicked items not exposed: {shown(not_exposed)}")
    recalled = set(lists["recalled"])
    missing = [item for item in lists["exposed"] if item not in recalled]
    if missing:
        repairs["exposed_added_to_recalled"] = len(missing)
        lists["recalled"] = lists["recalled"] + missing
    request.update(lists)
    request["user_features"] = feature_values(
        record.get("user_features"), "user_features", limits, kinds
    )
    return request, repairs


def decode(payload: Any) -> Any:
    """A raw record's payload as a JSON value: JSONL text is parsed, CSV/Parquet rows pass.

    Raises:
      BadRecord: `bad_json` for text that is not JSON (or holds an integer of more
        digits than Python converts), `too_deep` for nesting beyond the recursion limit.
    """
    if not isinstance(payload, str):
        return payload
    try:
        return json.loads(payload)
    except json.JSONDecodeError as e:
        raise BadRecord("bad_json", f"{e.msg} at column {e.colno}") from e
    except RecursionError as e:
        raise BadRecord("too_deep", "JSON nested deeper than the recursion limit") from e
    except ValueError as e:  # e.g. an integer literal of more than 4300 digits
        raise BadRecord("bad_json", str(e)[:200]) from e


def parse_request_line(
    line: str, limits: RecordLimits = DEFAULT_LIMITS
) -> tuple[dict[str, Any], dict[str, int]]:
    """Decodes one JSON line and validates it (see `validate_request`).

    Raises:
      BadRecord: `too_large` for a line over `limits.max_row_bytes`, or a broken rule.
    """
    size = len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass"))
    if size > limits.max_row_bytes:
        raise BadRecord(
            "too_large", f"the row is {size} bytes > data.max_row_bytes {limits.max_row_bytes}"
        )
    return validate_request(decode(line), limits)


def validate_user(
    record: Any, limits: RecordLimits = DEFAULT_LIMITS, kinds: FeatureKinds = _ALL_CATEGORICAL
) -> tuple[str, dict[str, Any]]:
    """(user_id, {feature: value}) of one user-table row `{"user_id", "features"}`, each
    value checked against its kind in `kinds` (see `feature_values`).

    Raises:
      BadRecord: a missing id or a feature of the wrong type.
    """
    if not isinstance(record, dict):
        raise BadRecord("bad_type", f"a user row must be an object, got {type(record).__name__}")
    user_id = require_id(record, "user_id", limits)
    return user_id, feature_values(record.get("features"), "features", limits, kinds)
