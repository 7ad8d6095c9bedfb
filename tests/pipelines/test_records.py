"""pipelines.records: one record's rules, with the reason each broken record gets."""

import datetime
import json

import pytest

from pipelines import records

GOOD = {
    "request_id": "r1",
    "user_id": "u1",
    "timestamp": 1_700_000_000,
    "recalled": ["i1", "i2", "i3"],
    "exposed": ["i1", "i2"],
    "clicked": ["i1"],
    "user_features": {"age": "25-34", "score": 3, "tags": ["a", "b"]},
}


def _with(**changes):
    record = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    return record


def test_good_record_is_normalised():
    request, repairs = records.validate_request(GOOD)
    assert request == {
        "request_id": "r1",
        "user_id": "u1",
        "timestamp": 1_700_000_000,
        "recalled": ["i1", "i2", "i3"],
        "exposed": ["i1", "i2"],
        "clicked": ["i1"],
        "user_features": {"age": ["25-34"], "score": ["3"], "tags": ["a", "b"]},
    }
    assert repairs == {}


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"request_id": ""}, "missing_id"),
        ({"request_id": "   "}, "missing_id"),
        ({"user_id": None}, "missing_id"),
        ({"user_id": 42}, "bad_type"),
        ({"timestamp": "yesterday"}, "bad_timestamp"),
        ({"timestamp": None}, "bad_timestamp"),
        ({"timestamp": True}, "bad_timestamp"),
        ({"exposed": {"i1": 1}}, "bad_type"),
        ({"recalled": ["i1", 7]}, "bad_type"),
        ({"clicked": ["i3"]}, "clicked_not_exposed"),
        ({"user_features": ["age"]}, "bad_type"),
        ({"user_features": {"age": {"nested": 1}}}, "bad_type"),
        ({"user_features": {"flag": True}}, "bad_type"),
    ],
)
def test_broken_record_names_its_reason(changes, reason):
    with pytest.raises(records.BadRecord) as raised:
        records.validate_request(_with(**changes))
    assert raised.value.reason == reason
    field = next(iter(changes))
    assert field in raised.value.detail or reason == "clicked_not_exposed"


def test_not_an_object_is_bad_type():
    with pytest.raises(records.BadRecord) as raised:
        records.validate_request(["r1"])
    assert raised.value.reason == "bad_type"


def test_bad_json_names_the_column():
    with pytest.raises(records.BadRecord) as raised:
        records.parse_request_line('{"request_id": "r1",')
    assert raised.value.reason == "bad_json"
    assert "column" in raised.value.detail


def test_repairs_are_made_and_counted():
    # exposed i4 is missing from recalled (added, 1), recalled has i1 twice and clicked
    # has i1 twice (2 duplicates removed).
    request, repairs = records.validate_request(
        _with(recalled=["i1", "i1", "i2"], exposed=["i1", "i4"], clicked=["i1", "i1"])
    )
    assert request["recalled"] == ["i1", "i2", "i4"]
    assert request["clicked"] == ["i1"]
    assert repairs == {"duplicates_removed": 2, "exposed_added_to_recalled": 1}


def test_csv_lists_and_missing_lists():
    request, _ = records.validate_request(
        _with(recalled="i1|i2|i3", exposed="i1|i2", clicked=None, user_features=None)
    )
    assert request["recalled"] == ["i1", "i2", "i3"]
    assert request["clicked"] == []
    assert request["user_features"] == {}


@pytest.mark.parametrize(
    "value, expected",
    [
        (1_700_000_000, 1_700_000_000),
        (1_700_000_000.9, 1_700_000_000),
        ("1700000000", 1_700_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000),  # naive means UTC
        ("2023-11-15T00:13:20+02:00", 1_700_000_000),
        (datetime.datetime(2023, 11, 14, 22, 13, 20), 1_700_000_000),
    ],
)
def test_timestamps_parse(value, expected):
    assert records.parse_timestamp(value) == expected


def test_decode_passes_rows_and_parses_text():
    assert records.decode({"a": 1}) == {"a": 1}
    assert records.decode(json.dumps({"a": 1})) == {"a": 1}


def test_validate_user():
    assert records.validate_user({"user_id": "u1", "features": {"age": 30}}) == (
        "u1",
        {"age": ["30"]},
    )
    assert records.validate_user({"user_id": "u2"}) == ("u2", {})
    for row, reason in (
        ({"features": {}}, "missing_id"),
        ({"user_id": "u", "features": 3}, "bad_type"),
    ):
        with pytest.raises(records.BadRecord) as raised:
            records.validate_user(row)
        assert raised.value.reason == reason
