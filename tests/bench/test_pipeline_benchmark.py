"""twotower.bench.pipeline and twotower.bench.synthetic at a tiny size."""

import json
import os

from twotower.bench import pipeline as benchmark
from twotower.bench import synthetic


def test_synthetic_logs_are_valid_and_repeatable(tmp_path):
    from pipelines import records

    first = synthetic.write_synthetic_logs(str(tmp_path / "a"), 25, num_items=97)
    second = synthetic.write_synthetic_logs(str(tmp_path / "b"), 25, num_items=97)
    with open(first["requests"], "rb") as a, open(second["requests"], "rb") as b:
        assert a.read() == b.read()
    with open(first["requests"]) as f:
        for line in f:
            request, repairs = records.parse_request_line(line)
            assert len(request["recalled"]) == 50 and len(request["exposed"]) == 10
            assert repairs == {}  # no duplicates: the recalled items are distinct


def test_tree_rss_counts_children():
    assert benchmark.tree_rss_bytes(os.getpid()) > 10 * 2**20


def test_benchmark_runs_both_systems_and_saves_json(tmp_path):
    printed = []
    results = benchmark.benchmark_pipeline(
        sizes=(300,), output_dir=str(tmp_path), running_mode="in_memory", log=printed.append
    )
    rows = {row["system"]: row for row in results["rows"]}
    assert set(rows) == {"reference", "beam"}
    assert rows["beam"]["examples"] == rows["reference"]["examples"] > 0
    for row in rows.values():
        assert row["rps"] > 0 and row["peak_rss_mb"] > 10
    with open(tmp_path / benchmark.RESULTS_FILE) as f:
        assert json.load(f) == results
    assert "requests_per_second" in printed[-1]
    assert not os.path.exists(tmp_path / "out-beam-300")
