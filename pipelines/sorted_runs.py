"""Sorted runs on disk: the shard writer's sort and the pipeline's groupings without
holding the logs in memory.

`shards.WriteShards` orders each shard's records by their digest. Grouping a shard's
records with a GroupByKey makes the DirectRunner hold the whole split in its process
memory (its grouping table keeps every value, then an encoded copy). Instead,
`SpillRunsFn` buffers (shard, digest, record) in the worker, and whenever the buffer
passes `spill_bytes` (and at the end of a bundle) writes one sorted run file per shard
it holds; only the run files' paths are grouped by shard, and `merge_runs` streams the
runs of one shard in digest order (`heapq.merge`). Memory: `spill_bytes` per worker plus
one read buffer per run being merged, whatever the input size.

`GroupByKeyOnDisk` is a GroupByKey built on the same runs: each (key, value) becomes a
frame (md5 of the key, the encoded pair) in one of `partitions` partitions; one merge per
partition streams the frames in digest order and yields each key with its values, so
only one key's values are in memory at a time. The DirectRunner holds a GroupByKey's
whole input in its own process memory; distributed runners shuffle on disk already and
gain nothing from it (docs/pipeline.md, *Memory against the input size*).

A run file is a sequence of frames: the 16-byte digest, the record's length (8 bytes,
little-endian), the record. Each transform's runs live in a folder of their own under
the staging directory. A merge never deletes the runs it read: a runner retries a
failed bundle from its input (Dataflow up to four times), and a retried merge must
find its runs again. `DeleteRunsAfter` deletes the folder once every merge has
committed (a global count of the merged output: a barrier), and the runs of spills
that were retried and never merged go with the staging directory.
"""

import hashlib
import heapq
import itertools
import struct
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import fs

RUNS_DIR = "_runs"
DIGEST_BYTES = 16
_LENGTH = struct.Struct("<Q")
_OVERHEAD_BYTES = 120  # the Python objects around one buffered record
PARTITIONS = 16  # merges of a GroupByKeyOnDisk: the parallelism of its grouped stage
_PAIR_CODER = FastPrimitivesCoder()  # Beam's own encoding of (key, value) pairs


def write_run(path: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Writes (digest, record) pairs, already sorted, as one run file."""
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for digest, record in records:
            if len(digest) != DIGEST_BYTES:
                raise ValueError(f"{path}: a digest of {len(digest)} bytes, not {DIGEST_BYTES}")
            f.write(digest + _LENGTH.pack(len(record)) + record)


def read_run(path: str) -> Iterator[tuple[bytes, bytes]]:
    """The (digest, record) pairs of a run file, in file order.

    Raises:
      ValueError: the file ends inside a frame.
    """
    header_bytes = DIGEST_BYTES + _LENGTH.size
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while header := f.read(header_bytes):
            if len(header) < header_bytes:
                raise ValueError(f"{path}: a run frame header cut short")
            (length,) = _LENGTH.unpack(header[DIGEST_BYTES:])
            record = f.read(length)
            if len(record) < length:
                raise ValueError(f"{path}: a run record cut short")
            yield header[:DIGEST_BYTES], record


def merge_runs(paths: Iterable[str]) -> Iterator[tuple[bytes, bytes]]:
    """The pairs of sorted runs, merged in (digest, record) order: what `sorted` gives."""
    return heapq.merge(*(read_run(path) for path in sorted(paths)))


class SpillRunsFn(beam.DoFn):
    """(shard, (digest, record)) -> (shard, run file path), one run per shard per spill.

    Args:
      runs_dir: where run files go (under the staging directory).
      spill_bytes: buffered record bytes (with an estimate of the Python objects around
        them) that trigger writing the buffer out as sorted runs.
    """

    def __init__(self, runs_dir: str, spill_bytes: int):
        if spill_bytes <= 0:
            raise ValueError(f"spill_bytes must be > 0, got {spill_bytes}")
        self._runs_dir = runs_dir
        self._spill_bytes = spill_bytes

    def start_bundle(self) -> None:
        self._buffer: dict[int, list[tuple[bytes, bytes]]] = {}
        self._buffered = 0

    def process(self, element: tuple[int, tuple[bytes, bytes]]) -> Iterator[tuple[int, str]]:
        shard, (digest, record) = element
        self._buffer.setdefault(shard, []).append((digest, record))
        self._buffered += len(digest) + len(record) + _OVERHEAD_BYTES
        if self._buffered >= self._spill_bytes:
            yield from self._spill()

    def finish_bundle(self) -> Iterator[Any]:
        for shard, path in self._spill():
            yield beam.transforms.window.GlobalWindows.windowed_value((shard, path))

    def _spill(self) -> Iterator[tuple[int, str]]:
        for shard, pairs in sorted(self._buffer.items()):
            pairs.sort()
            path = FileSystems.join(self._runs_dir, f"{shard:05d}-{uuid.uuid4().hex}.run")
            write_run(path, pairs)
            yield shard, path
        self._buffer, self._buffered = {}, 0


def _framed(pair: tuple[Any, Any], partitions: int) -> tuple[int, tuple[bytes, bytes]]:
    """(key, value) -> (partition, (md5 of the encoded key, the encoded pair))."""
    digest = hashlib.md5(_PAIR_CODER.encode(pair[0])).digest()
    return int.from_bytes(digest[:4], "big") % partitions, (digest, _PAIR_CODER.encode(pair))


def merged_groups(paths: Iterable[str]) -> Iterator[tuple[Any, list[Any]]]:
    """(key, values) of the pairs in runs written by `GroupByKeyOnDisk`, one key at a
    time in digest order, values in encoded order; the runs stay (`DeleteRunsAfter`)."""
    for _, frames in itertools.groupby(merge_runs(paths), key=lambda frame: frame[0]):
        groups: dict[Any, list[Any]] = {}  # keys whose md5 collide stay apart
        for _, record in frames:
            key, value = _PAIR_CODER.decode(record)
            groups.setdefault(key, []).append(value)
        yield from groups.items()


def _delete_runs(_: int, runs_dir: str) -> tuple[()]:
    fs.delete_tree(runs_dir)
    return ()


@beam.ptransform_fn
def DeleteRunsAfter(merged: beam.PCollection, runs_dir: str) -> beam.PCollection:  # noqa: N802
    """Deletes `runs_dir` once every bundle that produced `merged` has committed.

    The global count is the barrier: its one element exists only after the last of
    those bundles (with whatever was fused behind the merge) succeeded, so no retry can
    still need a run. Returns an empty PCollection.
    """
    return (
        merged
        | "CountMerged" >> beam.combiners.Count.Globally()
        | "DeleteRuns" >> beam.FlatMap(_delete_runs, runs_dir)
    )


@beam.ptransform_fn
def GroupByKeyOnDisk(  # noqa: N802
    pairs: beam.PCollection | tuple[beam.PCollection, ...],
    runs_dir: str,
    spill_bytes: int,
    partitions: int = PARTITIONS,
) -> beam.PCollection:
    """A GroupByKey whose values wait in sorted runs on disk, not in the runner's memory.

    Args:
      pairs: (key, value) elements, or a tuple of such PCollections grouped together;
        keys and values encodable by Beam's FastPrimitivesCoder.
      runs_dir: a folder for this transform's runs alone (under the staging directory;
        deleted once every merge has committed).
      spill_bytes: buffered bytes per worker that trigger writing runs (> 0).
      partitions: how many merges (each streams its share of the keys).

    Returns:
      (key, [values]) per distinct key, as a GroupByKey gives (in no promised order).
    """
    # Several inputs are spilled apart and only their run paths flattened: the
    # DirectRunner buffers a Flatten's inputs whole when it cannot fuse it.
    inputs = pairs if isinstance(pairs, tuple) else (pairs,)
    runs = [
        pcoll
        | f"Frame{i}" >> beam.Map(_framed, partitions)
        | f"SortedRuns{i}" >> beam.ParDo(SpillRunsFn(runs_dir, spill_bytes))
        for i, pcoll in enumerate(inputs)
    ]
    merged = (
        runs
        | "FlattenRuns" >> beam.Flatten()
        | "GroupRunsByPartition" >> beam.GroupByKey()
        | "MergeRuns" >> beam.FlatMap(lambda group: merged_groups(group[1]))
    )
    _ = merged | "CleanUp" >> DeleteRunsAfter(runs_dir)
    return merged
