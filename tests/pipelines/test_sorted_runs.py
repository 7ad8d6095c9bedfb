"""pipelines.sorted_runs: the shard writer's sorted runs on disk give the same shard
files, byte for byte, as sorting each shard in memory; `data.shard_spill_mb` validates."""

import os

import apache_beam as beam
import pytest

from common.config import load_config
from pipelines import shards, sorted_runs
from pipelines.preprocess import preprocess
from tests.conftest import IN_MEMORY_BEAM


def _example(n: int) -> dict:
    return {
        "request_id": f"r{n}",
        "user_id": f"u{n % 3}",
        "item_id": f"i{n % 7}",
        "timestamp": 1_700_000_000 + n,
        "history": [f"i{k}" for k in range(n % 4)],
        "space_a": [f"i{(n + 1) % 7}"],
        "space_b": [],
        "num_space_a": 1,
        "num_space_b": 0,
    }


def _write(folder, spill_bytes: int) -> list[dict]:
    """Stats of the 3 shards WriteShards wrote, read back from the files."""
    with beam.Pipeline(argv=list(IN_MEMORY_BEAM)) as pipeline:
        _ = (
            pipeline
            | beam.Create([_example(n) for n in range(40)])
            | shards.WriteShards(str(folder), "train", 3, spill_bytes)
        )
    return [shards.shard_stats(str(folder / name)) for name in _files(folder)]


def _files(folder) -> dict[str, bytes]:
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".tfrecord.gz"):
            with open(os.path.join(folder, name), "rb") as f:
                found[name] = f.read()
    return found


def test_runs_of_one_record_merge_into_the_in_memory_shards(tmp_path):
    in_memory = _write(tmp_path / "memory", spill_bytes=0)
    spilled = _write(tmp_path / "runs", spill_bytes=1)  # every record its own run
    assert spilled == in_memory
    assert sum(s["records"] for s in spilled) == 40  # 40 examples over 3 shards
    assert _files(tmp_path / "runs") == _files(tmp_path / "memory")
    assert len(_files(tmp_path / "runs")) == 3
    assert not os.listdir(tmp_path / "runs" / sorted_runs.RUNS_DIR / "train")  # merged, gone


def test_a_run_merges_in_digest_then_record_order(tmp_path):
    first, second = str(tmp_path / "a.run"), str(tmp_path / "b.run")
    a = b"\x01" * 16
    b = b"\x02" * 16
    sorted_runs.write_run(first, [(a, b"y"), (b, b"")])
    sorted_runs.write_run(second, [(a, b"x"), (b, b"z" * 70_000)])
    merged = list(sorted_runs.merge_runs([first, second]))
    # sorted() of the four pairs: a/x, a/y, b/"", b/zzz...
    assert merged == [(a, b"x"), (a, b"y"), (b, b""), (b, b"z" * 70_000)]


def test_a_cut_run_and_bad_settings_raise_clear_errors(tmp_path):
    path = str(tmp_path / "cut.run")
    sorted_runs.write_run(path, [(b"\x00" * 16, b"record")])
    with open(path, "r+b") as f:
        f.truncate(27)  # 16 + 8 header bytes, then 3 of the record's 6
    with pytest.raises(ValueError, match="cut.run: a run record cut short"):
        list(sorted_runs.read_run(path))
    with pytest.raises(ValueError, match="a digest of 3 bytes"):
        sorted_runs.write_run(str(tmp_path / "x.run"), [(b"abc", b"")])
    with pytest.raises(ValueError, match="spill_bytes must be > 0, got 0"):
        sorted_runs.SpillRunsFn(str(tmp_path), 0)
    with pytest.raises(ValueError, match="shard_spill_mb"):
        load_config(overrides=["data.shard_spill_mb=-1"])


def test_preprocess_writes_the_same_dataset_with_and_without_runs(tiny_logs, tmp_path):
    requests, catalog = tiny_logs
    built = {}
    for spill in (0, 1):
        overrides = [
            "data.source=logs",
            f"data.input={requests}",
            f"data.catalog={catalog}",
            f"data.shard_spill_mb={spill}",
        ]
        output = tmp_path / f"spill{spill}"
        built[spill] = preprocess(
            load_config(overrides=overrides), str(output), beam_args=IN_MEMORY_BEAM
        )
        assert not (output / sorted_runs.RUNS_DIR).exists()
    for split in ("train", "eval"):
        assert built[1]["splits"][split] == built[0]["splits"][split]
    assert built[1]["splits"]["train"]["examples"] > 0
    assert _files(tmp_path / "spill1") == _files(tmp_path / "spill0")
    for key in ("reconciliation", "dead_letter_reasons"):
        assert built[1][key] == built[0][key]
