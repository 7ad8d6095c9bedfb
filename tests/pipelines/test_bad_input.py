"""Issue 12, the data half: no single row, file or empty input can stop the pipeline or
publish a bad dataset. Each test runs the real pipeline (in memory) on a tiny input."""

import gzip
import json
import zlib

import pytest

from pipelines import catalog
from pipelines.preprocess import DataError, eval_from_days
from tests.conftest import tiny_world_rows, write_jsonl
from tests.pipelines.conftest import read_dead_letters, read_examples, run_preprocess

T0 = 1_700_000_000
DAY = 86_400
CATALOG = [{"item_id": f"i{i}", "cluster": f"c{i % 2}", "features": {"b": "x"}} for i in range(6)]
DEEP = "[" * 100_000 + "]" * 100_000


def _request(request_id, user, timestamp, clicked, exposed, **extra):
    return {
        "request_id": request_id,
        "user_id": user,
        "timestamp": timestamp,
        "recalled": list(exposed),
        "exposed": list(exposed),
        "clicked": list(clicked),
        **extra,
    }


def _with_raw_timestamp(request_id, user, text):
    """A request line whose timestamp is written as `text` (1e400 is not a Python float)."""
    line = json.dumps(_request(request_id, user, "@", [], ["i1"]))
    return line.replace('"@"', text)


def _reasons(dataset, table):
    return [(row["line"], row["reason"]) for row in read_dead_letters(dataset, table)]


def test_rows_that_used_to_crash_the_run_are_dead_lettered(tmp_path):
    requests = [
        _request("r1", "u1", T0, ["i1"], ["i1", "i2"]),  # line 1
        _with_raw_timestamp("r2", "u1", "1e400"),  # 2: JSON parses it as inf
        _with_raw_timestamp("r3", "u1", '"inf"'),  # 3
        _with_raw_timestamp("r4", "u1", "NaN"),  # 4
        _with_raw_timestamp("r5", "u1", "1e30"),  # 5: finite, far beyond int64
        DEEP,  # 6: 100k levels of nesting
        _request("r7", "u1", T0 + 10, ["i2"], ["i2"]),  # 7
        _request("r8", "u2", T0 + 20, ["i3"], ["i3"]),  # 8
    ]
    users = [{"user_id": "u1", "features": {"age": "30"}}, DEEP]
    items = [*CATALOG, DEEP, {"item_id": "i\t9"}, {"item_id": "i8", "features": {"x": 1e300}}]
    output = tmp_path / "dataset"
    built = run_preprocess(
        output,
        write_jsonl(str(tmp_path / "r.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), items),
        f"data.users={write_jsonl(str(tmp_path / 'users.jsonl'), users)}",
        "data.max_bad_fraction=1",
    )
    assert _reasons(output, "requests") == [
        (2, "bad_timestamp"),
        (3, "bad_timestamp"),
        (4, "bad_timestamp"),
        (5, "timestamp_out_of_range"),
        (6, "too_deep"),
    ]
    assert _reasons(output, "users") == [(2, "too_deep")]
    assert _reasons(output, "catalog") == [(7, "too_deep"), (8, "bad_characters")]
    for table, (read, valid) in {"requests": (8, 3), "users": (2, 1), "catalog": (9, 7)}.items():
        block = built["reconciliation"][table]
        assert block["balanced"], table
        assert (block["total"]["read"], block["total"]["valid"]) == (read, valid), table
    # u1: r1 train, r7 eval; u2: r8 eval.
    assert [e["request_id"] for e in read_examples(output, "train")] == [["r1"]]


def test_any_exception_in_a_catalog_row_dead_letters_it(tmp_path, monkeypatch):
    validate = catalog.validate_item

    def flaky(record, limits):
        if record["item_id"] == "i3":
            raise KeyError("surprise")
        return validate(record, limits)

    monkeypatch.setattr(catalog, "validate_item", flaky)
    summary = catalog.write_catalog(
        [write_jsonl(str(tmp_path / "items.jsonl"), CATALOG)], "auto", str(tmp_path / "out")
    )
    (dead,) = summary["dead_letters"]
    assert (dead["line"], dead["reason"], dead["detail"]) == (
        4,
        "invalid_record",
        "KeyError: 'surprise'",
    )
    assert summary["num_items"] == 5


def test_a_far_future_timestamp_no_longer_moves_the_time_split(tmp_path):
    requests = [
        _request(f"r{u}-{d}", f"u{u}", T0 + d * DAY + u, [f"i{d}"], [f"i{d}"])
        for d in range(3)
        for u in range(2)
    ]
    requests.append(_request("r-future", "u0", 9_999_999_999, ["i4"], ["i4"]))  # year 2286
    output = tmp_path / "dataset"
    built = run_preprocess(
        output,
        write_jsonl(str(tmp_path / "r.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), CATALOG),
        "data.split=time",
        "data.eval_days=1",
        "data.max_bad_fraction=1",
    )
    assert _reasons(output, "requests") == [(7, "timestamp_out_of_range")]
    last = T0 + 2 * DAY + 1
    assert built["timestamps"]["max"] == last
    assert built["eval_from"] == eval_from_days(last, 1)  # the last real day is eval
    assert (built["splits"]["train"]["examples"], built["splits"]["eval"]["examples"]) == (4, 2)


def test_size_limits_are_settings(tmp_path):
    requests = [
        _request("r1", "u1", T0, ["i1"], ["i1"]),
        _request("r2", "u1", T0 + 1, ["i2"], ["i2"], pad="x" * 400),  # a 500-byte line
        _request("r3", "u1", T0 + 2, [], ["i1", "i_long_id_9"]),  # an 11-byte item id
        _request("r4", "u1", T0 + 3, ["i3"], ["i3"]),
    ]
    items = [*CATALOG, {"item_id": "i_long_id_9"}]
    output = tmp_path / "dataset"
    built = run_preprocess(
        output,
        write_jsonl(str(tmp_path / "r.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), items),
        "data.max_row_bytes=300",
        "data.max_id_bytes=10",
        "data.max_bad_fraction=1",
    )
    assert _reasons(output, "requests") == [(2, "too_large"), (3, "too_large")]
    assert _reasons(output, "catalog") == [(7, "too_large")]
    dead = read_dead_letters(output, "requests")[0]
    assert dead["detail"].startswith("the row is ") and len(dead["record"]) <= 1024
    assert built["options"]["max_row_bytes"] == 300
    assert built["reconciliation"]["requests"]["balanced"]


def test_duplicate_request_ids_keep_the_first_row(tmp_path):
    requests = [
        _request("r1", "u1", T0 + 100, ["i1"], ["i1", "i2"]),  # 1: first r1, kept
        _request("r1", "u1", T0 + 200, ["i2"], ["i2", "i0"]),  # 2: clicked copy
        _request("r1", "u2", T0 + 150, [], ["i0"]),  # 3: copy without a click, other user
        _request("r2", "u1", T0 + 300, ["i3"], ["i3"]),  # 4
        _request("r3", "u2", T0 + 50, [], ["i4"]),  # 5: first r3 has no click, kept
        _request("r3", "u2", T0 + 60, ["i4"], ["i4", "i0"]),  # 6: its clicked copy
        _request("r4", "u2", T0 + 400, ["i5"], ["i5", "i1"]),  # 7
    ]
    output = tmp_path / "dataset"
    built = run_preprocess(
        output,
        write_jsonl(str(tmp_path / "r.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), CATALOG),
        "data.max_bad_fraction=1",
    )
    assert _reasons(output, "requests") == [
        (2, "duplicate_request"),
        (3, "duplicate_request"),
        (6, "duplicate_request"),
    ]
    details = [row["detail"] for row in read_dead_letters(output, "requests")]
    assert details[0].startswith("request_id 'r1' first at ") and details[0].endswith("r.jsonl:1")
    (count,) = built["reconciliation"]["requests"]["per_file"].values()
    assert count == {"read": 7, "valid": 4, "dead_letter": 3, "unreadable": 0, "balanced": True}
    assert built["dead_letter_reasons"]["requests"] == {"duplicate_request": 3}
    assert built["requests_without_clicks"] == 1  # r3 at line 5
    # Exposures of the kept rows only: i0 was exposed by the three copies alone.
    assert (output / "item_exposure.tsv").read_text() == "i1\t2\ni2\t1\ni3\t1\ni4\t1\ni5\t1\n"
    assert built["exposure"]["requests"] == 4
    pairs = {
        split: [(e["request_id"][0], e["item_id"][0]) for e in read_examples(output, split)]
        for split in ("train", "eval")
    }
    assert pairs == {"train": [("r1", "i1")], "eval": [("r2", "i3"), ("r4", "i5")]}


def test_a_cut_gzip_file_keeps_its_first_rows_and_says_what_was_lost(tmp_path):
    requests, items = tiny_world_rows()
    text = "".join(json.dumps(r) + "\n" for r in requests).encode()
    packed = gzip.compress(text, mtime=0)
    cut = packed[: len(packed) * 2 // 3]
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(cut)
    complete = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut).count(b"\n")
    output = tmp_path / "dataset"
    built = run_preprocess(
        output,
        str(path),
        write_jsonl(str(tmp_path / "items.jsonl"), items),
        "data.max_bad_fraction=1",
    )
    (count,) = built["reconciliation"]["requests"]["per_file"].values()
    assert count == {
        "read": complete + 1,
        "valid": complete,
        "dead_letter": 1,
        "unreadable": 1,
        "balanced": True,
    }
    assert built["reconciliation"]["requests"]["total"]["unreadable"] == 1
    (dead,) = read_dead_letters(output, "requests")
    assert dead["reason"] == "truncated_gzip"
    assert dead["detail"] == (
        f"gzip stream cut short (no end marker) at compressed byte {len(cut)} of {len(cut)}; "
        f"{complete} lines read before it"
    )


def test_an_empty_input_fails_and_leaves_the_dataset_alone(tmp_path):
    from twotower import cli

    output = tmp_path / "dataset"
    output.mkdir()
    (output / "manifest.json").write_text('{"good": true}')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    items = write_jsonl(str(tmp_path / "items.jsonl"), CATALOG)
    error = run_preprocess(output, str(empty), items, expect_error=DataError)
    assert f"no valid request in data.input='{empty}': 0 rows read" in str(error)
    assert (output / "manifest.json").read_text() == '{"good": true}'
    argv = ["preprocess", "--output", str(output), "--overwrite", "--direct-running-mode"]
    overrides = [f"data.input={empty}", f"data.catalog={items}", "data.source=logs"]
    argv += ["in_memory", *(arg for o in overrides for arg in ("--set", o))]
    assert cli.main(argv) == 1
    assert (output / "manifest.json").read_text() == '{"good": true}'


def test_no_training_example_fails(tmp_path):
    # One click per user: leave-last-click-out holds every one out for eval.
    requests = [_request(f"r{u}", f"u{u}", T0 + u, ["i1"], ["i1"]) for u in range(3)]
    error = run_preprocess(
        tmp_path / "dataset",
        write_jsonl(str(tmp_path / "r.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), CATALOG),
        expect_error=DataError,
    )
    assert "no training example from data.input=" in str(error)
    assert "3 valid requests, 0 of them without a click, 3 eval examples" in str(error)
    assert not (tmp_path / "dataset").exists()


def test_timestamp_window_must_be_ordered():
    from common.config import load_config
    from common.settings import ConfigError

    with pytest.raises(ConfigError, match="data.min_timestamp: 10 is after data.max_timestamp 5"):
        load_config(overrides=["data.min_timestamp=10", "data.max_timestamp=5"])
