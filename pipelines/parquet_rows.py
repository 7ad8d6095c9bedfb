"""The rows of a Parquet file's row groups, each row's size measured before it becomes
Python objects, so that a row over the limit is reported rather than parsed.

A row's size is the bytes of its strings and binaries (list and map elements and struct
fields summed up, computed on the Arrow arrays) plus 8 per other value; a record batch
no larger than the limit is not measured at all.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BATCH_ROWS = 4096


class CorruptParquet(ValueError):
    """pyarrow could not read a Parquet file or one of its row groups."""


def value_bytes(array: pa.Array) -> np.ndarray:
    """About how many bytes each element of `array` holds: int64 `[len(array)]`."""
    kind = array.type
    if pa.types.is_map(kind):  # as list<struct<key, value>>: the same bytes
        entry = pa.struct([pa.field("key", kind.key_type), pa.field("value", kind.item_type)])
        array, kind = array.cast(pa.list_(entry)), pa.list_(entry)
    if any(
        check(kind)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
        )
    ):
        lengths = pc.binary_length(array).fill_null(0)
        return lengths.to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        weights = value_bytes(array.flatten())
        return np.bincount(parents, weights=weights, minlength=len(array)).astype(np.int64)
    if pa.types.is_struct(kind):
        total = np.zeros(len(array), dtype=np.int64)
        for child in array.flatten():
            total += value_bytes(child)
        return total
    return np.full(len(array), 8, dtype=np.int64)  # numbers, timestamps, booleans


def _batch_rows(batch: pa.RecordBatch, max_row_bytes: int) -> Iterator[tuple[Any, int]]:
    """(columns, 0) per row of `batch`, or (None, its bytes) for a row over the limit."""
    if batch.nbytes <= max_row_bytes:  # no row is larger than its batch
        yield from ((columns, 0) for columns in batch.to_pylist())
        return
    sizes = sum((value_bytes(column) for column in batch.columns), np.zeros(batch.num_rows))
    over = sizes > max_row_bytes
    kept = iter(batch.filter(pa.array(~over)).to_pylist())
    for index in range(batch.num_rows):
        yield (None, int(sizes[index])) if over[index] else (next(kept), 0)


def read_rows(
    f: Any, first_group: int, end_group: int, max_row_bytes: int
) -> Iterator[tuple[int, Any, int]]:
    """(row index, {column: value}, 0), or (row index, None, bytes) for a row over
    `max_row_bytes`, for the row groups [first_group, end_group) of the file `f`.

    Raises:
      CorruptParquet: the file or a row group cannot be read.
    """
    try:
        parquet = pq.ParquetFile(f)
    except pa.ArrowException as e:
        raise CorruptParquet(str(e)) from e
    groups = range(first_group, min(end_group, parquet.metadata.num_row_groups))
    row = sum(parquet.metadata.row_group(g).num_rows for g in range(first_group))
    for group in groups:
        batches = parquet.iter_batches(BATCH_ROWS, row_groups=[group])
        while True:
            try:
                batch = next(batches, None)
            except pa.ArrowException as e:
                raise CorruptParquet(f"row group {group}: {e}") from e
            if batch is None:
                break
            for columns, size in _batch_rows(batch, max_row_bytes):
                yield row, columns, size
                row += 1
