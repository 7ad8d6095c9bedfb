"""twotower.bench.pipeline and twotower.bench.synthetic at a tiny size."""

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


def test_beam_and_reference_write_the_same_examples(tiny_logs, tiny_dataset, tmp_path):
    from pipelines import examples
    from tests.pipelines.conftest import read_records, read_tfrecords
    from twotower.bench.reference import reference_preprocess

    requests, catalog = tiny_logs
    summary = reference_preprocess(requests, catalog, str(tmp_path), examples.ExampleOptions())
    for split in ("train", "eval"):
        mine = sorted(read_tfrecords(str(tmp_path / f"{split}.tfrecord.gz")))
        assert mine == read_records(tiny_dataset, split)
        assert summary["examples"][split] == len(mine)
