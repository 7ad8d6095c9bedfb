"""pipelines.sorted_runs: the shard writer's sorted runs on disk give the same shard
files, byte for byte, as sorting each shard in memory; the on-disk GroupByKey gives what
Beam's does, and preprocess the same dataset with either; the settings validate."""

import os

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from common.config import load_config
from pipelines import shards, sorted_runs
from pipelines.preprocess import preprocess
from tests.conftest import IN_MEMORY_BEAM, tiny_world_rows, write_jsonl
from tests.pipelines.conftest import read_dead_letters


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
    assert not (tmp_path / "runs" / sorted_runs.RUNS_DIR / "train").exists()  # merged, gone


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
    with pytest.raises(ValueError, match="group_spill_mb"):
        load_config(overrides=["data.group_spill_mb=-1"])


def _grouped(pcoll_fn, folder) -> list:
    with beam.Pipeline(argv=list(IN_MEMORY_BEAM)) as pipeline:
        pairs = pipeline | beam.Create([(f"k{n % 5}", {"n": n, "t": (n, "x")}) for n in range(23)])
        _ = (
            pcoll_fn(pairs)
            | beam.MapTuple(lambda k, vs: (k, sorted(v["n"] for v in vs)))
            | beam.combiners.ToList()
            | beam.Map(lambda rows: write_jsonl(str(folder / "out.jsonl"), sorted(rows)))
        )
    return (folder / "out.jsonl").read_text().splitlines()


def test_the_on_disk_group_by_key_gives_beams_groups_and_deletes_its_runs(tmp_path):
    runs = tmp_path / "runs"
    on_disk = _grouped(
        lambda p: p | sorted_runs.GroupByKeyOnDisk(str(runs), spill_bytes=1, partitions=3),
        tmp_path,
    )
    in_memory = _grouped(lambda p: p | beam.GroupByKey(), tmp_path)
    assert on_disk == in_memory
    assert on_disk[0] == '["k0", [0, 5, 10, 15, 20]]'
    assert len(on_disk) == 5
    assert not runs.exists()  # every run merged, then the folder deleted


def test_keys_whose_digests_collide_stay_apart(tmp_path):
    coder = sorted_runs._PAIR_CODER
    same = b"\x07" * 16  # two keys forced onto one digest
    path = str(tmp_path / "p.run")
    frames = sorted((same, coder.encode(pair)) for pair in [("a", 1), ("b", 2), ("a", 3)])
    sorted_runs.write_run(path, frames)
    assert dict(sorted_runs.merged_groups([path])) == {"a": [1, 3], "b": [2]}


def test_a_retried_merge_finds_its_runs_again(tmp_path):
    """A runner retries a failed bundle from its input: the merge must not have deleted
    the runs it read (Dataflow retries up to four times)."""
    path = str(tmp_path / "p.run")
    pairs = [("a", 1), ("b", 2), ("a", 3)]
    sorted_runs.write_run(path, sorted(sorted_runs._framed(p, 1)[1] for p in pairs))
    first = dict(sorted_runs.merged_groups([path]))
    assert first == dict(sorted_runs.merged_groups([path])) == {"a": [1, 3], "b": [2]}

    shard = tmp_path / "shard"
    shard.mkdir()
    run = str(tmp_path / "s.run")
    sorted_runs.write_run(run, [(bytes([n]) * 16, b"record%d" % n) for n in range(3)])
    written = [shards._write_merged((0, [run]), str(shard), "train", 1) for _ in range(2)]
    assert written[0] == written[1]
    assert written[0]["records"] == 3


def test_the_runs_folder_is_deleted_once_the_merges_are_done(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "x.run").write_bytes(b"")
    with beam.Pipeline(argv=list(IN_MEMORY_BEAM)) as pipeline:
        merged = pipeline | beam.Create(range(7))
        deleted = merged | sorted_runs.DeleteRunsAfter(str(runs))
        assert_that(deleted, equal_to([]))
    assert not runs.exists()


def test_preprocess_writes_the_same_dataset_with_and_without_runs(tmp_path):
    requests, catalog = tiny_world_rows()
    requests.append(dict(requests[5]))  # a clicked duplicate: dead-lettered with the user
    requests.append({**requests[6], "clicked": []})  # an unclicked one: by the id grouping
    users = "user_id,features.age\nu1,30\nu2,40\nu1,31\n"  # u1 twice: duplicate_user
    (tmp_path / "users.csv").write_text(users)
    requests = write_jsonl(str(tmp_path / "requests.jsonl"), requests)
    catalog = write_jsonl(str(tmp_path / "items.jsonl"), catalog)
    built = {}
    for spill in (0, 1):
        overrides = [
            "data.source=logs",
            f"data.input={requests}",
            f"data.catalog={catalog}",
            f"data.users={tmp_path / 'users.csv'}",
            f"data.shard_spill_mb={spill}",
            f"data.group_spill_mb={spill}",
            "data.max_bad_fraction=0.5",
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
    reasons = built[1]["dead_letter_reasons"]
    assert reasons["requests"] == {"duplicate_request": 2}
    assert reasons["users"] == {"duplicate_user": 1}
    for table in ("requests", "users"):
        assert read_dead_letters(tmp_path / "spill1", table) == read_dead_letters(
            tmp_path / "spill0", table
        )
