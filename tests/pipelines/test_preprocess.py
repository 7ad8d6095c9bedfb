"""The whole pipeline on small logs: dead letters, reconciliation, manifest, determinism."""

import glob
import json
import os

import pytest

from pipelines.preprocess import DataError
from tests.conftest import tiny_world_rows, write_jsonl
from tests.pipelines.conftest import (
    read_dead_letters,
    read_examples,
    read_records,
    run_preprocess,
)

CATALOG = [
    {"item_id": f"i{i}", "cluster": f"c{i % 2}", "features": {"band": "b"}} for i in range(6)
]


def _good(request_id, user, timestamp, clicked, exposed, recalled, **extra):
    return {
        "request_id": request_id,
        "user_id": user,
        "timestamp": timestamp,
        "recalled": recalled,
        "exposed": exposed,
        "clicked": clicked,
        **extra,
    }


BROKEN_LOG = [
    _good("r1", "u1", 100, ["i1"], ["i1", "i2"], ["i1", "i2", "i3"]),  # line 1
    '{"request_id": "r2", "user_id": ',  # line 2: bad JSON
    _good("r3", "u1", 150, ["i3"], ["i1"], ["i1", "i3"]),  # line 3: clicked, not exposed
    _good("r4", "u2", 160, [], ["i1"], ["i1", "zz"]),  # line 4: unknown item
    _good("", "u2", 170, [], ["i1"], ["i1"]),  # line 5: empty id
    _good("r6", "u2", 180, [], {"i1": 1}, ["i1"]),  # line 6: wrong type
    "",  # line 7: blank, skipped
    # line 8: exposed i4 missing from recalled (repaired), i2 listed twice (removed)
    _good("r8", "u1", 200, ["i2"], ["i2", "i4", "i2"], ["i2", "i5"]),
    _good("r9", "u2", 300, ["i5"], ["i5", "i0"], ["i5", "i0", "i1"]),  # line 9
]
EXPECTED_DEAD = [
    (2, "bad_json"),
    (3, "clicked_not_exposed"),
    (4, "unknown_item"),
    (5, "missing_id"),
    (6, "bad_type"),
]


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    requests = write_jsonl(str(folder / "requests.jsonl"), BROKEN_LOG)
    catalog = write_jsonl(str(folder / "items.jsonl"), CATALOG)
    output = folder / "dataset"
    built = run_preprocess(output, requests, catalog, "data.max_bad_fraction=1")
    return requests, catalog, output, built


def test_exactly_the_broken_lines_are_dead_lettered(broken):
    requests, _, output, _ = broken
    rows = read_dead_letters(output, "requests")
    assert [(r["line"], r["reason"]) for r in rows] == EXPECTED_DEAD
    with open(requests) as f:
        lines = f.read().split("\n")
    for row in rows:
        assert row["source"] == requests
        assert row["row"] is None
        assert row["record"] == lines[row["line"] - 1]  # the original text, verbatim
        assert row["detail"]


def test_counts_reconcile(broken):
    requests, _, _, built = broken
    block = built["reconciliation"]["requests"]
    assert block["per_file"] == {
        requests: {"read": 8, "valid": 3, "dead_letter": 5, "unreadable": 0, "balanced": True}
    }
    assert block["balanced"] and built["reconciliation"]["catalog"]["balanced"]
    assert built["dead_letter_reasons"]["requests"] == {reason: 1 for _, reason in EXPECTED_DEAD}
    assert built["repairs"] == {"duplicates_removed": 1, "exposed_added_to_recalled": 1}
    # 3 valid requests, 3 clicks: u1 has r1 (train) and r8 (eval), u2 has r9 (eval).
    assert built["splits"]["train"]["examples"] == 1
    assert built["splits"]["eval"]["examples"] == 2


def test_examples_and_spaces(broken):
    _, _, output, _ = broken
    (train,) = read_examples(output, "train")
    assert train["request_id"] == ["r1"] and train["item_id"] == ["i1"]
    assert train["space_a"] == ["i2"] and train["space_b"] == ["i3"]
    assert (train["num_space_a"], train["num_space_b"]) == ([1], [1])
    r8 = next(e for e in read_examples(output, "eval") if e["request_id"] == ["r8"])
    # exposed {i2, i4}, recalled {i2, i5, i4}: A = {i4}, B = {i5}; history = r1's click.
    assert (r8["space_a"], r8["space_b"], r8["history"]) == (["i4"], ["i5"], ["i1"])


def test_manifest_keeps_the_trainer_contract(broken):
    _, _, output, built = broken
    with open(os.path.join(output, "manifest.json")) as f:
        assert json.load(f) == built
    assert built["schema_version"] == 1
    assert built["feature_spec"]["history"] == {"dtype": "string", "shape": "list"}
    assert built["num_items"] == 6 and built["item_features"] == ["band"]
    for split in ("train", "eval"):
        for name in built["splits"][split]["files"]:
            assert os.path.exists(os.path.join(output, name))
    for key in ("item_catalog", "item_frequency"):
        assert os.path.exists(os.path.join(output, built["files"][key]))
    for relative in built["files"]["vocabularies"].values():
        assert os.path.exists(os.path.join(output, relative))
    assert not glob.glob(f"{output}.tmp-*"), "the staging folder was left behind"


def test_vocabularies_come_from_the_training_split_only(broken):
    _, _, output, built = broken
    # Train holds one example (u1 clicking i1); u2 and i2, i5 appear only in eval.
    with open(os.path.join(output, "vocab", "user_id.txt")) as f:
        assert f.read() == "u1\n"
    with open(os.path.join(output, "item_frequency.tsv")) as f:
        assert f.read() == "i1\t1\n"
    assert built["vocabularies"]["item.cluster"] == {
        "file": "vocab/item.cluster.txt",
        "size": 1,
        "counted": 1,
        "rows": 3,  # padding, the OOV bucket, c1
        "num_oov_buckets": 1,
    }


def test_too_many_bad_rows_fail_after_writing_dead_letters(broken, tmp_path):
    from twotower import cli

    requests, catalog, _, _ = broken
    output = tmp_path / "dataset"
    output.mkdir()
    (output / "manifest.json").write_text("{}")  # an earlier good dataset stays untouched
    error = run_preprocess(output, requests, catalog, expect_error=DataError)
    assert "requests: 5 of 8 rows dead-lettered" in str(error)
    assert (output / "manifest.json").read_text() == "{}"
    failed = tmp_path / "dataset.failed"
    assert [(r["line"], r["reason"]) for r in read_dead_letters(failed, "requests")] == (
        EXPECTED_DEAD
    )
    failure = json.loads((failed / "failure.json").read_text())
    assert failure["reconciliation"]["requests"]["total"]["dead_letter"] == 5
    assert not (failed / "manifest.json").exists()
    assert not glob.glob(f"{output}.tmp-*")
    argv = ["preprocess", "--output", str(tmp_path / "other"), "--direct-running-mode"]
    overrides = [f"data.input={requests}", f"data.catalog={catalog}", "data.source=logs"]
    argv += ["in_memory", *(arg for o in overrides for arg in ("--set", o))]
    assert cli.main(argv) == 1  # bad input is a permanent failure
    assert not (tmp_path / "other").exists()


def test_same_input_same_examples(tiny_logs, tiny_dataset, tmp_path):
    requests, catalog = tiny_logs
    again = tmp_path / "again"
    run_preprocess(again, requests, catalog)
    for split in ("train", "eval"):
        assert read_records(again, split) == read_records(tiny_dataset, split)
    for name in ("item_catalog.jsonl", "item_frequency.tsv", "vocab/user.segment.txt"):
        with open(again / name, "rb") as mine, open(os.path.join(tiny_dataset, name), "rb") as old:
            assert mine.read() == old.read()


def test_no_history_leaks_from_the_future(tiny_logs, tiny_dataset):
    requests, _ = tiny_logs
    clicks = {}  # (user, item) -> timestamps of its clicks
    with open(requests) as f:
        for line in f:
            row = json.loads(line)
            for item in row["clicked"]:
                clicks.setdefault((row["user_id"], item), []).append(row["timestamp"])
    produced = read_examples(tiny_dataset, "train") + read_examples(tiny_dataset, "eval")
    assert any(e["history"] for e in produced)
    for example in produced:
        (user,), (timestamp,) = example["user_id"], example["timestamp"]
        for item in example["history"]:
            assert min(clicks[(user, item)]) < timestamp


def _as_csv(rows, path):
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["request_id", "user_id", "timestamp", "recalled", "exposed", "clicked"])
        for r in rows:
            lists = ["|".join(r[k]) for k in ("recalled", "exposed", "clicked")]
            writer.writerow([r["request_id"], r["user_id"], r["timestamp"], *lists])


def test_csv_parquet_and_jsonl_give_the_same_examples(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    requests, catalog = tiny_world_rows(num_users=4)
    for row in requests:
        row.pop("user_features")
    jsonl = write_jsonl(str(tmp_path / "r.jsonl"), requests)
    _as_csv(requests, tmp_path / "r.csv")
    pq.write_table(pa.Table.from_pylist(requests), tmp_path / "r.parquet", row_group_size=5)
    items = write_jsonl(str(tmp_path / "items.jsonl"), catalog)
    results = {}
    for name in ("r.jsonl", "r.csv", "r.parquet"):
        run_preprocess(tmp_path / name.replace(".", "_"), str(tmp_path / name), items)
        results[name] = [
            read_records(tmp_path / name.replace(".", "_"), s) for s in ("train", "eval")
        ]
    assert results["r.csv"] == results["r.jsonl"] == results["r.parquet"]
    assert jsonl and results["r.jsonl"][0]


def test_user_table_fills_features_and_duplicates_are_dead_lettered(tmp_path):
    requests = [
        _good("r0", "u1", 50, ["i2"], ["i2"], ["i2"]),  # training needs one example
        _good("r1", "u1", 100, ["i1"], ["i1"], ["i1"]),
        _good("r2", "u2", 100, ["i2"], ["i2"], ["i2"], user_features={"age": "20"}),
    ]
    users = "user_id,features.age,features.tags\nu1,30,a|b\nu2,99,\nu1,31,\n,40,\n"
    (tmp_path / "users.csv").write_text(users)
    output = tmp_path / "dataset"
    built = run_preprocess(
        output,
        write_jsonl(str(tmp_path / "r.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), CATALOG),
        f"data.users={tmp_path / 'users.csv'}",
        "data.max_bad_fraction=1",
    )
    by_user = {e["user_id"][0]: e for e in read_examples(output, "eval")}
    assert by_user["u1"]["user.age"] == ["30"] and by_user["u1"]["user.tags"] == ["a", "b"]
    assert by_user["u2"]["user.age"] == ["20"]  # the request's own feature wins
    dead = read_dead_letters(output, "users")
    assert [(r["line"], r["reason"]) for r in dead] == [(4, "duplicate_user"), (5, "missing_id")]
    assert built["reconciliation"]["users"]["total"] == {
        "read": 4,
        "valid": 2,
        "dead_letter": 2,
        "unreadable": 0,
    }
    assert built["reconciliation"]["users"]["balanced"]


def test_eval_days_takes_the_last_utc_days(tmp_path):
    day = 86_400
    requests = [
        _good(f"r{d}", "u1", 10 * day + d * day + 5, ["i1"], ["i1"], ["i1"]) for d in range(4)
    ]
    built = run_preprocess(
        tmp_path / "dataset",
        write_jsonl(str(tmp_path / "r.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), CATALOG),
        "data.split=time",
        "data.eval_days=2",
    )
    assert built["eval_from"] == 12 * day  # days 12 and 13 are the last two
    assert built["timestamps"] == {"min": 10 * day + 5, "max": 13 * day + 5}
    assert (built["splits"]["train"]["examples"], built["splits"]["eval"]["examples"]) == (2, 2)


@pytest.mark.parametrize("split", ["time", "leave-last-click-out"])
def test_exposures_are_counted_over_the_training_period(tmp_path, split):
    day = 86_400
    requests = [
        _good("r0", "u1", 10 * day, ["i1"], ["i1", "i2"], ["i1", "i2", "i3"]),
        _good("r1", "u2", 10 * day + 9, [], ["i2", "i3"], ["i2", "i3"]),  # no click: counted
        _good("r2", "u1", 11 * day, ["i4"], ["i4", "i2"], ["i4", "i2"]),
        _good("r3", "u2", 12 * day + 1, ["i5"], ["i5", "i2"], ["i5", "i2"]),
    ]
    built = run_preprocess(
        tmp_path / "dataset",
        write_jsonl(str(tmp_path / "r.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), CATALOG),
        f"data.split={split}",
        "data.eval_from=" + str(12 * day if split == "time" else 0),
    )
    text = (tmp_path / "dataset" / "item_exposure.tsv").read_text()
    if split == "time":  # r3 is in the eval period: its exposures are not counted
        assert text == "i2\t3\ni1\t1\ni3\t1\ni4\t1\n"
        assert built["exposure"] == {"requests": 3, "exposures": 6, "items": 4}
    else:  # leave-last-click-out holds out clicks, not requests: all four count
        assert text == "i2\t4\ni1\t1\ni3\t1\ni4\t1\ni5\t1\n"
        assert built["exposure"] == {"requests": 4, "exposures": 8, "items": 5}
    assert built["files"]["item_exposure"] == "item_exposure.tsv"


def test_missing_inputs_name_the_key(tmp_path):
    catalog = write_jsonl(str(tmp_path / "items.jsonl"), CATALOG)
    error = run_preprocess(
        tmp_path / "d", str(tmp_path / "none*.jsonl"), catalog, expect_error=DataError
    )
    assert "data.input" in str(error) and "none*.jsonl" in str(error)
