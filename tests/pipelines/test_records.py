"""pipelines.records: one record's rules, with the reason each broken record gets."""

import dataclasses
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


@pytest.mark.parametrize(
    "value, reason",
    [
        (float("inf"), "bad_timestamp"),  # what JSON's 1e400 parses as
        (float("-inf"), "bad_timestamp"),
        (float("nan"), "bad_timestamp"),
        ("inf", "bad_timestamp"),
        ("NaN", "bad_timestamp"),
        ("1e400", "bad_timestamp"),
        ("1" * 100, "bad_timestamp"),  # longer than any timestamp's text
        (1e30, "timestamp_out_of_range"),
        (10**30, "timestamp_out_of_range"),
        (-1, "timestamp_out_of_range"),
        (4_102_444_801, "timestamp_out_of_range"),  # a second after 2100-01-01
        ("9999-12-31T23:59:59Z", "timestamp_out_of_range"),
        (datetime.datetime(1960, 1, 1), "timestamp_out_of_range"),
    ],
)
def test_implausible_timestamps_are_bad_records(value, reason):
    with pytest.raises(records.BadRecord) as raised:
        records.validate_request(_with(timestamp=value))
    assert raised.value.reason == reason


def test_timestamp_window_is_a_setting():
    limits = records.RecordLimits(min_timestamp=1_000, max_timestamp=2_000)
    assert records.validate_request(_with(timestamp=1_000), limits)[0]["timestamp"] == 1_000
    assert records.validate_request(_with(timestamp=2_000), limits)[0]["timestamp"] == 2_000
    for outside in (999, 2_001):
        with pytest.raises(records.BadRecord, match="data.max_timestamp 2000"):
            records.validate_request(_with(timestamp=outside), limits)


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"timestamp": 1e400}', None),  # parses (as inf); the validator rejects it
        ("[" * 100_000 + "]" * 100_000, "too_deep"),
        ('{"a": ' * 50_000 + "1" + "}" * 50_000, "too_deep"),
        ("1" * 5_000, "bad_json"),  # more digits than Python converts to an int
        ('{"request_id": "r1",', "bad_json"),
    ],
)
def test_decode_raises_only_bad_records(line, reason):
    if reason is None:
        assert records.decode(line) == {"timestamp": float("inf")}
        return
    with pytest.raises(records.BadRecord) as raised:
        records.decode(line)
    assert raised.value.reason == reason


LIMITS = records.RecordLimits(max_id_bytes=8, max_row_bytes=200)


@pytest.mark.parametrize(
    "changes, reason, field",
    [
        ({"request_id": "r" * 9}, "too_large", "request_id"),
        ({"user_id": "é" * 5}, "too_large", "user_id"),  # 5 characters, 10 bytes
        ({"recalled": ["i1", "i2", "i3", "x" * 9]}, "too_large", "recalled"),
        ({"user_features": {"age": "y" * 9}}, "too_large", "user_features.age"),
        ({"user_features": {"n" * 9: "1"}}, "too_large", "user_features name"),
        ({"recalled": ["i1", "i2", "i3\tx"]}, "bad_characters", "recalled"),
        ({"user_id": "u\n1"}, "bad_characters", "user_id"),
        ({"user_features": {"tags": ["a\x00"]}}, "bad_characters", "user_features.tags"),
        ({"user_features": {"../x": "1"}}, "bad_characters", "user_features name"),
        ({"user_features": {"": "1"}}, "bad_type", "user_features"),
        ({"request_id": "r\ud800"}, "bad_encoding", "request_id"),  # a lone surrogate
        ({"clicked": ["\udfff"], "exposed": ["\udfff"]}, "bad_encoding", "exposed"),
    ],
)
def test_ids_and_tokens_must_fit_the_files_they_go_to(changes, reason, field):
    with pytest.raises(records.BadRecord) as raised:
        records.validate_request(_with(**changes), LIMITS)
    assert (raised.value.reason, field in raised.value.detail) == (reason, True)


def test_a_row_over_max_row_bytes_is_not_parsed():
    line = json.dumps(_with(padding="x" * 300))
    with pytest.raises(records.BadRecord, match="data.max_row_bytes 200") as raised:
        records.parse_request_line(line, LIMITS)
    assert raised.value.reason == "too_large"


def test_details_stay_short():
    with pytest.raises(records.BadRecord) as raised:
        records.validate_request(_with(recalled=["i1"] * 100_000 + [7]))
    assert raised.value.reason == "bad_type" and len(raised.value.detail) < 300


@pytest.mark.parametrize(
    "error, expected",
    [
        (records.BadRecord("bad_json", "x"), ("bad_json", "x")),
        (RecursionError(), ("too_deep", "nested deeper than the recursion limit")),
        (KeyError("k"), ("invalid_record", "KeyError: 'k'")),
        (OverflowError("int too large"), ("invalid_record", "OverflowError: int too large")),
    ],
)
def test_failure_names_any_exception(error, expected):
    assert records.failure(error) == expected


def test_record_limits_mirror_the_data_settings():
    from common.config import DataConfig

    data = DataConfig()
    for field in dataclasses.fields(records.RecordLimits):
        assert getattr(records.DEFAULT_LIMITS, field.name) == getattr(data, field.name)


def test_catalog_and_user_rows_share_the_limits():
    from pipelines import catalog

    for row, reason in (
        ({"item_id": "i" * 9}, "too_large"),
        ({"item_id": "i1", "cluster": "c\n"}, "bad_characters"),
        ({"item_id": "i1", "features": {"genre": ["x" * 9]}}, "too_large"),
    ):
        with pytest.raises(records.BadRecord) as raised:
            catalog.validate_item(row, LIMITS)
        assert raised.value.reason == reason
    with pytest.raises(records.BadRecord) as raised:
        records.validate_user({"user_id": "u1", "features": {"a/b": "1"}}, LIMITS)
    assert raised.value.reason == "bad_characters"
