"""pipelines.sources: every format read with exact positions, whole or in chunks."""

import gzip
import json
import os
import zlib

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import sources, transforms
from tests.conftest import IN_MEMORY_BEAM


def _jsonl_bytes():
    lines = [json.dumps({"request_id": f"r{i}", "pad": "x" * (i % 5)}) for i in range(40)]
    lines[3] = ""  # a blank line: skipped, but it still counts for the numbering
    lines[6] = "{broken"
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(_jsonl_bytes())
    return str(path)


@pytest.mark.parametrize(
    "path, configured, expected",
    [
        ("a.jsonl", "auto", "jsonl"),
        ("a.JSON.gz", "auto", "jsonl"),
        ("a.ndjson", "auto", "jsonl"),
        ("a.csv.gz", "auto", "csv"),
        ("a.parquet", "auto", "parquet"),
        ("a.log", "csv", "csv"),
    ],
)
def test_format_of(path, configured, expected):
    assert sources.format_of(path, configured) == expected


def test_format_of_unknown_extension_names_the_file():
    with pytest.raises(ValueError, match="a.log"):
        sources.format_of("a.log")


def test_expand_patterns_globs_and_lists(tmp_path):
    for name in ("a.jsonl", "b.jsonl", "c.csv"):
        (tmp_path / name).write_text("")
    found = sources.expand_patterns(f"{tmp_path}/*.jsonl, {tmp_path}/c.csv")
    assert [os.path.basename(p) for p in found] == ["a.jsonl", "b.jsonl", "c.csv"]
    with pytest.raises(FileNotFoundError, match="nothing"):
        sources.expand_patterns(f"{tmp_path}/nothing*.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        sources.expand_patterns(f"{tmp_path}/missing.jsonl")


def test_jsonl_lines_are_numbered_from_one(jsonl):
    raw = list(sources.iter_records([jsonl]))
    assert len(raw) == 39  # 40 lines, one blank
    assert raw[0] == (jsonl, 1, None, '{"request_id": "r0", "pad": ""}', None)
    assert raw[3][1] == 5  # line 4 was blank
    assert raw[5][1:4] == (7, None, "{broken")


@pytest.mark.parametrize("chunk_bytes", [1, 37, 100, 10**6])
def test_chunks_give_the_same_records_as_the_whole_file(jsonl, chunk_bytes):
    chunks = list(sources.split_file(jsonl, "jsonl", chunk_bytes))
    assert len(chunks) > 1 or chunk_bytes == 10**6
    # Chunks tile the file: each starts where the previous one ended.
    assert [c[2] for c in chunks[1:]] == [c[3] for c in chunks[:-1]]
    chunked = [record for chunk in chunks for record in sources.read_chunk(chunk)]
    assert chunked == list(sources.iter_records([jsonl]))


def test_last_line_without_newline_is_read(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}')
    for chunk_bytes in (0, 3):
        chunks = sources.split_file(str(path), "jsonl", chunk_bytes)
        lines = [r[1:4] for c in chunks for r in sources.read_chunk(c)]
        assert lines == [(1, None, '{"a": 1}'), (2, None, '{"a": 2}')]


def test_gzip_and_bad_encoding(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n{"a": "\xff"}\n'))
    first, second = sources.iter_records([str(path)])
    assert first[1:] == (1, None, '{"a": 1}', None)
    assert second[1] == 2
    assert second[4] == ("bad_encoding", "not UTF-8 at byte 7")
    assert list(sources.split_file(str(path), "jsonl", 1)) == [(str(path), "jsonl", 0, -1, 1)]


def test_corrupt_gzip_is_one_unreadable_record(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    (record,) = sources.iter_records([str(path)])
    assert record[:4] == (str(path), None, None, None)
    assert record[4][0] == "unreadable_file"


def test_csv_rows_nest_columns_and_split_lists(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text(
        "\ufeffrequest_id,user_id,timestamp,recalled,clicked,user_features.tags,features.x\n"
        'r1,u1,5,i1|i2,,a|b,"multi\nline"\n'
        "\n"
        "r2,u2\n"
        "r3,u3,7,i3,i3,c,\n"
    )
    rows = list(sources.iter_records([str(path)]))
    assert rows[0] == (
        str(path),
        2,
        None,
        {
            "request_id": "r1",
            "user_id": "u1",
            "timestamp": "5",
            "recalled": "i1|i2",
            "user_features": {"tags": ["a", "b"]},
            "features": {"x": "multi\nline"},
        },
        None,
    )
    assert rows[1][1] == 5 and rows[1][3] == ["r2", "u2"]
    assert rows[1][4][0] == "bad_csv" and "expected 7 fields" in rows[1][4][1]
    assert rows[2][1] == 6 and rows[2][3]["user_features"] == {"tags": "c"}


def test_parquet_rows_groups_maps_and_nested_columns(tmp_path):
    path = str(tmp_path / "requests.parquet")
    table = pa.table(
        {
            "request_id": ["a", "b", "c"],
            "recalled": [["i1"], ["i2"], None],
            "user_features.age": ["30", None, "40"],
            "attributes": pa.array(
                [[("k", "v")], [], None], type=pa.map_(pa.string(), pa.string())
            ),
        }
    )
    pq.write_table(table, path, row_group_size=2)
    chunks = list(sources.split_file(path, "parquet"))
    assert [c[2:4] for c in chunks] == [(0, 1), (1, 2)]
    rows = [r for c in chunks for r in sources.read_chunk(c)]
    assert rows == [
        (
            path,
            None,
            0,
            {
                "request_id": "a",
                "recalled": ["i1"],
                "user_features": {"age": "30"},
                "attributes": {"k": "v"},
            },
            None,
        ),
        (path, None, 1, {"request_id": "b", "recalled": ["i2"], "attributes": []}, None),
        (path, None, 2, {"request_id": "c", "user_features": {"age": "40"}}, None),
    ]


def test_not_parquet_is_one_unreadable_record(tmp_path):
    path = tmp_path / "a.parquet"
    path.write_bytes(b"PAR1 but not really")
    (record,) = sources.iter_records([str(path)])
    assert record[4][0] == "unreadable_file"


def test_dead_letter_row_keeps_the_original():
    raw = ("f.jsonl", 3, None, "{bad", None)
    assert sources.dead_letter_row(raw, "bad_json", "x") == {
        "source": "f.jsonl",
        "line": 3,
        "row": None,
        "reason": "bad_json",
        "detail": "x",
        "record": "{bad",
    }


def test_read_records_transform_reads_chunks_in_parallel(jsonl, tmp_path):
    csv_path = tmp_path / "more.csv"
    csv_path.write_text("request_id\nr100\n")
    expected = [r[:2] for r in sources.iter_records([jsonl, str(csv_path)])]
    with test_pipeline.TestPipeline(argv=list(IN_MEMORY_BEAM)) as p:
        raw = p | transforms.ReadRecords([(jsonl, "jsonl"), (str(csv_path), "csv")], chunk_bytes=50)
        assert_that(raw | beam.Map(lambda r: (r[0], r[1])), equal_to(expected))


def _gzip_lines(count):
    text = "".join(
        json.dumps({"request_id": f"r{i}", "pad": "x" * (i % 50)}) + "\n" for i in range(count)
    )
    return text.encode(), gzip.compress(text.encode(), mtime=0)


def test_gzip_cut_in_half_keeps_the_rows_before_the_cut(tmp_path):
    plain, packed = _gzip_lines(2_000)
    cut = packed[: len(packed) // 2]
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(cut)
    # The lines whose newline lies in what the first half decompresses to.
    readable = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut)
    complete = readable.count(b"\n")
    assert 0 < complete < 2_000
    records = list(sources.iter_records([str(path)]))
    assert [r[1] for r in records[:-1]] == list(range(1, complete + 1))
    assert all(r[4] is None for r in records[:-1])
    last = records[-1]
    assert last[1:3] == (None, None) and last[4][0] == "truncated_gzip"
    detail = last[4][1]
    assert f"at compressed byte {len(cut)} of {len(cut)}" in detail
    assert f"{complete} lines read before it" in detail
    # The unterminated text before the cut is the dead letter's record, not a row.
    assert last[3] == readable[readable.rindex(b"\n") + 1 :].decode()[:1024]


def test_corrupt_gzip_data_names_where(tmp_path):
    _, packed = _gzip_lines(2_000)
    broken = bytearray(packed)
    middle = len(packed) // 2
    broken[middle : middle + 64] = bytes(64)  # zeroes in the middle of the stream
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(bytes(broken))
    records = list(sources.iter_records([str(path)]))
    last = records[-1]
    assert last[4][0] == "unreadable_file"
    assert last[4][1].startswith("gzip stream corrupt (") and f"of {len(packed)};" in last[4][1]
    # The rows before the damage are kept.
    intact = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(packed[: middle - 1_000])
    kept = intact.count(b"\n")
    assert kept > 100 and [r[1] for r in records[:kept]] == list(range(1, kept + 1))
    assert all(r[4] is None for r in records[:kept])


def test_concatenated_gzip_members_are_one_file(tmp_path):
    path = tmp_path / "two.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n') + gzip.compress(b'{"a": 2}\n'))
    assert [r[1:] for r in sources.iter_records([str(path)])] == [
        (1, None, '{"a": 1}', None),
        (2, None, '{"a": 2}', None),
    ]


@pytest.mark.parametrize("name, chunk_bytes", [("a.jsonl", 0), ("a.jsonl", 7), ("a.jsonl.gz", 0)])
def test_a_line_over_max_row_bytes_is_too_large_and_not_kept_whole(tmp_path, name, chunk_bytes):
    text = b'{"a": 1}\n{"b": "' + b"x" * 5_000 + b'"}\r\n\n{"a": 3}\n'
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    chunks = sources.split_file(str(path), "jsonl", chunk_bytes)
    records = [r for c in chunks for r in sources.read_chunk(c, max_row_bytes=100)]
    assert [(r[1], r[4] and r[4][0]) for r in records] == [(1, None), (2, "too_large"), (4, None)]
    assert records[1][4][1] == "the row is 5009 bytes > data.max_row_bytes 100"
    assert records[1][3] == text[9 : 9 + 1024].decode()  # its first KiB only


def test_csv_rows_over_max_row_bytes(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        "request_id,user_id\n"
        "r1,u1\n"
        f"r2,{'x' * 300}\n"  # one long line
        'r3,"' + "y\n" * 80 + '"\n'  # one row of 81 short lines
        "r4,u4\n"
    )
    records = list(sources.iter_records([str(path)], max_row_bytes=100))
    assert [(r[1], r[4] and r[4][0]) for r in records] == [
        (2, None),
        (3, "too_large"),
        (4, "too_large"),
        (85, None),
    ]


def test_parquet_rows_over_max_row_bytes(tmp_path):
    path = str(tmp_path / "r.parquet")
    table = pa.table(
        {
            "request_id": ["a", "b", "c"],
            "recalled": [["i1"], ["i" * 60, "j" * 60], None],
            "attributes": pa.array(
                [[("k", "v")], [], [("k", "w" * 200)]], type=pa.map_(pa.string(), pa.string())
            ),
        }
    )
    pq.write_table(table, path)
    rows = list(sources.iter_records([path], max_row_bytes=100))
    assert [(r[2], r[4] and r[4][0]) for r in rows] == [
        (0, None),
        (1, "too_large"),
        (2, "too_large"),
    ]
    assert rows[0][3] == {"request_id": "a", "recalled": ["i1"], "attributes": {"k": "v"}}
    assert rows[1][4][1] == "the row is 121 bytes > data.max_row_bytes 100"  # 1 + 60 + 60
    assert rows[2][4][1] == "the row is 202 bytes > data.max_row_bytes 100"  # 1 + 1 + 200


def test_dead_letter_json_never_fails():
    row = sources.dead_letter_row(("f.parquet", None, 1, {1: "a", "b": 2}, None), "bad_type", "x")
    assert json.loads(sources.dead_letter_json(row))["record"] == "{1: 'a', 'b': 2}"
