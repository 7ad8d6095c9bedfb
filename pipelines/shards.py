"""Reproducible TFRecord shards: the same Examples give the same files, byte for byte.

Beam's `WriteToTFRecord` deals records to shards round-robin from a random start, so
each run spreads them differently. Here an Example's shard and its place in the shard
follow from a hash of its key (user_id, request_id, item_id; md5, never Python's salted
`hash`): shard = the first 8 hex digits modulo the shard count, records sorted by the
whole digest. Each shard is one gzip stream written by zlib with a fixed header (mtime
0, no file name; the same bytes Beam writes), so equal records give equal files with the
same zlib. The writer counts what it writes: bytes, records and the CRC32C of the file
(`google_crc32c`, the TFRecord checksum, which the trainer checks before reading).

With `spill_bytes` 0 a shard is sorted in one worker's memory (a GroupByKey per shard):
keep a shard well under the worker's memory (about 400 bytes an Example) by raising
data.num_shards; the DirectRunner then holds the whole split in its own memory. With
`spill_bytes` > 0 (data.shard_spill_mb) the records are sorted in bounded runs on disk
and merged per shard (`sorted_runs`): the same bytes, memory flat in the input size.
"""

import hashlib
import struct
import zlib
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from common import contracts
from pipelines import examples, sorted_runs

_GZIP_WBITS = zlib.MAX_WBITS | 16
_FLUSH_BYTES = 1 << 20
_READ_BYTES = 1 << 20


def shard_name(split: str, index: int, num_shards: int) -> str:
    """`train-00001-of-00004.tfrecord.gz`: Beam's default shard name template."""
    return f"{split}-{index:05d}-of-{num_shards:05d}{contracts.SHARD_SUFFIX}"


def example_digest(example: dict[str, Any]) -> bytes:
    """The stable hash that places an Example: md5 of user_id, request_id and item_id."""
    key = "\n".join((example["user_id"], example["request_id"], example["item_id"]))
    return hashlib.md5(key.encode()).digest()


def shard_index(digest: bytes, num_shards: int) -> int:
    return int.from_bytes(digest[:4], "big") % num_shards


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC32C, the data, the data's masked CRC32C."""
    length = struct.pack("<Q", len(data))
    masked = struct.pack("<I", _masked_crc(length))
    return b"".join((length, masked, data, struct.pack("<I", _masked_crc(data))))


def write_shard(path: str, records: Iterable[bytes]) -> dict[str, Any]:
    """Writes `records`, in order, as a gzipped TFRecord file at `path`.

    Returns:
      {"bytes", "records", "crc32c"} of the file written (crc32c: 8 hex digits).
    """
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, _GZIP_WBITS)
    size, crc, count, pending = 0, 0, 0, bytearray()
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:

        def emit(compressed: bytes) -> None:
            nonlocal size, crc
            if compressed:
                f.write(compressed)
                size += len(compressed)
                crc = google_crc32c.extend(crc, compressed)

        for record in records:
            pending += tfrecord_frame(record)
            count += 1
            if len(pending) >= _FLUSH_BYTES:
                emit(compressor.compress(bytes(pending)))
                pending.clear()
        emit(compressor.compress(bytes(pending)))
        emit(compressor.flush())
    return {"bytes": size, "records": count, "crc32c": f"{crc:08x}"}


def file_checksum(path: str) -> tuple[int, str]:
    """(bytes, CRC32C as 8 hex digits) of a file as stored."""
    size, crc = 0, 0
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while block := f.read(_READ_BYTES):
            size += len(block)
            crc = google_crc32c.extend(crc, block)
    return size, f"{crc:08x}"


def count_records(path: str) -> int:
    """The records of a gzipped TFRecord file (framing only; checksums not checked)."""
    count = 0
    with FileSystems.open(path, compression_type=CompressionTypes.GZIP) as f:
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{path}: a TFRecord header cut short after {count} records")
            (length,) = struct.unpack("<Q", header[:8])
            remaining = length + 4
            while remaining:
                chunk = f.read(min(remaining, _READ_BYTES))
                if not chunk:
                    raise ValueError(f"{path}: record {count} cut short")
                remaining -= len(chunk)
            count += 1
    return count


def shard_stats(path: str) -> dict[str, Any]:
    """{"bytes", "records", "crc32c"} of a shard read back (shards the runner wrote)."""
    size, crc = file_checksum(path)
    return {"bytes": size, "records": count_records(path), "crc32c": crc}


def _keyed(example: dict[str, Any], num_shards: int) -> tuple[int, tuple[bytes, bytes]]:
    digest = example_digest(example)
    return shard_index(digest, num_shards), (digest, examples.to_tf_example(example))


def _write(
    group: tuple[int, Iterable[Any]], output_dir: str, split: str, num_shards: int
) -> dict[str, Any]:
    index, values = group
    return _write_records(index, sorted(values), output_dir, split, num_shards)


def _write_records(
    index: int,
    pairs: Iterable[tuple[bytes, bytes]],
    output_dir: str,
    split: str,
    num_shards: int,
) -> dict[str, Any]:
    """Writes (digest, record) pairs, in digest order, as shard `index`; its stats."""
    name = shard_name(split, index, num_shards)
    stats = write_shard(FileSystems.join(output_dir, name), (record for _, record in pairs))
    return {"split": split, "file": name, **stats}


def _write_merged(
    group: tuple[int, Iterable[str]], output_dir: str, split: str, num_shards: int
) -> dict[str, Any]:
    """Merges one shard's sorted runs into the shard (the runs stay for a retry)."""
    index, runs = group
    return _write_records(index, sorted_runs.merge_runs(runs), output_dir, split, num_shards)


def _write_empty(
    _: Any, written: list[dict[str, Any]], output_dir: str, split: str, num_shards: int
) -> Iterable[dict[str, Any]]:
    """Writes the shards no Example went to (empty files, as Beam's writer would)."""
    have = {stats["file"] for stats in written}
    for index in range(num_shards):
        name = shard_name(split, index, num_shards)
        if name not in have:
            stats = write_shard(FileSystems.join(output_dir, name), [])
            yield {"split": split, "file": name, **stats}


@beam.ptransform_fn
def WriteShards(  # noqa: N802
    split_examples: beam.PCollection,
    output_dir: str,
    split: str,
    num_shards: int,
    spill_bytes: int = 0,
) -> beam.PCollection:
    """Writes one split's Examples as `num_shards` reproducible shards (empty ones too).

    Args:
      split_examples: example dicts (`examples.user_examples`).
      output_dir: the staging dataset directory.
      split: "train" or "eval" (the file name prefix).
      num_shards: how many shards (> 0).
      spill_bytes: 0: each shard sorted in memory after a GroupByKey of its records;
        > 0: sorted runs of at most about this many buffered bytes per worker, merged
        per shard (the same files; memory independent of the split's size).

    Returns:
      One {"split", "file", "bytes", "records", "crc32c"} per shard.
    """
    # The empty shards are written after the others from their stats (a side input), not
    # by flattening a marker per shard into the grouped Examples: a Flatten in front of
    # the GroupByKey made the DirectRunner hold the split once more.
    keyed = split_examples | "Key" >> beam.Map(_keyed, num_shards)
    if spill_bytes:
        runs_dir = FileSystems.join(output_dir, sorted_runs.RUNS_DIR, split)
        written = (
            keyed
            | "SortedRuns" >> beam.ParDo(sorted_runs.SpillRunsFn(runs_dir, spill_bytes))
            | "GroupRunsByShard" >> beam.GroupByKey()
            | "Merge" >> beam.Map(_write_merged, output_dir, split, num_shards)
        )
        _ = written | "CleanUp" >> sorted_runs.DeleteRunsAfter(runs_dir)
    else:
        written = (
            keyed
            | "GroupByShard" >> beam.GroupByKey()
            | "Write" >> beam.Map(_write, output_dir, split, num_shards)
        )
    empty = (
        split_examples.pipeline
        | "Once" >> beam.Create([None])
        | "WriteEmpty"
        >> beam.FlatMap(_write_empty, beam.pvalue.AsList(written), output_dir, split, num_shards)
    )
    return (written, empty) | "AllShards" >> beam.Flatten()
