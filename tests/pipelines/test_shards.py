"""pipelines.shards: the same input gives the same shard files, byte for byte, and the
manifest records what each shard holds."""

import json
import os

import pytest

from common.config import load_config
from pipelines import shards
from pipelines.preprocess import preprocess
from pipelines.tf_example import parse_example
from tests.conftest import IN_MEMORY_BEAM
from tests.pipelines.conftest import read_tfrecords, run_preprocess

TWO_PROCESSES = (
    "--runner=DirectRunner",
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
)


def test_written_shards_are_tfrecords_with_their_stats(tmp_path):
    records = [b"first", b"", b"x" * 100_000]
    path = str(tmp_path / "s.tfrecord.gz")
    stats = shards.write_shard(path, records)
    assert read_tfrecords(path) == records  # TensorFlow checks every CRC
    assert stats == shards.shard_stats(path)
    assert stats["records"] == 3 and stats["bytes"] == os.path.getsize(path)
    empty = str(tmp_path / "e.tfrecord.gz")
    assert shards.write_shard(empty, []) == shards.shard_stats(empty)
    assert read_tfrecords(empty) == []
    with open(path, "rb") as f:
        header = f.read(10)
    assert header == bytes.fromhex("1f8b0800000000000003")  # gzip, mtime 0, no name


def _run(tiny_logs, output, beam_args):
    requests, catalog = tiny_logs
    overrides = ["data.source=logs", f"data.input={requests}", f"data.catalog={catalog}"]
    config = load_config(overrides=[*overrides, "data.num_shards=4"])
    return preprocess(config, str(output), beam_args=beam_args, overwrite=True)


@pytest.fixture(scope="module")
def twice(tiny_logs, tmp_path_factory):
    """The same logs preprocessed in memory and with two worker processes."""
    folder = tmp_path_factory.mktemp("twice")
    first = _run(tiny_logs, folder / "a", IN_MEMORY_BEAM)
    second = _run(tiny_logs, folder / "b", TWO_PROCESSES)
    return folder / "a", first, folder / "b", second


def test_the_same_input_gives_the_same_shard_bytes(twice):
    first_dir, first, second_dir, second = twice
    for built in (first, second):
        built.pop("created_at")
    assert first == second
    names = [s["file"] for split in ("train", "eval") for s in first["splits"][split]["shards"]]
    assert len(names) == 8 and "train-00003-of-00004.tfrecord.gz" in names
    for name in names:
        assert (first_dir / name).read_bytes() == (second_dir / name).read_bytes(), name


def test_shards_hold_what_the_manifest_says(twice):
    output, built, _, _ = twice
    for split in ("train", "eval"):
        block = built["splits"][split]
        assert block["files"] == [s["file"] for s in block["shards"]]
        assert sum(s["records"] for s in block["shards"]) == block["examples"] > 0
        for shard in block["shards"]:
            stats = shards.shard_stats(str(output / shard["file"]))
            assert {k: shard[k] for k in stats} == stats


def test_an_example_goes_to_the_shard_of_its_key_in_key_order(twice):
    output, built, _, _ = twice
    for split in ("train", "eval"):
        for index, shard in enumerate(built["splits"][split]["shards"]):
            digests = []
            for record in read_tfrecords(str(output / shard["file"])):
                example = {k: v[0] for k, v in parse_example(record).items() if len(v) == 1}
                digest = shards.example_digest(example)
                assert shards.shard_index(digest, 4) == index
                digests.append(digest)
            assert digests == sorted(digests)


def test_runner_chosen_shards_are_read_back(tiny_logs, tmp_path):
    requests, catalog = tiny_logs
    built = run_preprocess(tmp_path / "d", requests, catalog, "data.num_shards=0")
    for split in ("train", "eval"):
        listed = built["splits"][split]["shards"]
        assert listed and sum(s["records"] for s in listed) == built["splits"][split]["examples"]
        for shard in listed:
            stats = shards.shard_stats(str(tmp_path / "d" / shard["file"]))
            assert {k: shard[k] for k in stats} == stats
    with open(tmp_path / "d" / "manifest.json") as f:
        assert json.load(f)["splits"] == built["splits"]
