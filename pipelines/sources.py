"""Input files (JSON Lines, CSV, Parquet; gzip by extension) read with their positions.

Every record leaves as a *raw record*, the tuple `(source, line, row, payload, error)`:
`source` the file, `line` the 1-based line it starts on (JSONL, CSV) or None, `row` the
0-based row index (Parquet) or None, `payload` the line's text (JSONL) or a dict of the
row's columns (CSV, Parquet), and `error` None or `(reason, detail)` when the row could
not even be read (bad encoding, a wrong CSV field count, a line or row over
`max_row_bytes`, a corrupt or cut file). A row over `max_row_bytes` is never parsed:
its payload is the line's first 1 KiB (JSONL, CSV) or None (Parquet). A corrupt or cut
file ends with one record whose line and row are None and whose payload is the
unterminated text before the break (see `lines`); the rows before it are kept.

CSV and Parquet rows follow the JSON layout: a column named `prefix.name` becomes
`{"prefix": {"name": value}}` (`user_features.age`, `features.genres`), and in CSV `|`
separates the elements of a list (`recalled`, and a nested cell such as `Comedy|Drama`);
an empty CSV cell or a Parquet null is an absent field.

Large files are read in parallel (`transforms.ReadRecords`): an uncompressed JSONL file
is cut into chunks of about `chunk_bytes` at line starts (one sequential scan counts the
lines, so line numbers stay exact), a Parquet file into its row groups; gzip files and
CSV (whose quoted cells may hold newlines) are read whole, one worker each.
"""

import csv
import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.lines import PREFIX_BYTES, TextLines
from pipelines.records import shown

EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
CHUNK_BYTES = 64 << 20
MAX_ROW_BYTES = 1 << 20  # data.max_row_bytes' default
UNREADABLE = ("unreadable_file", "truncated_gzip")  # a file (part) lost, not one row
_SCAN_BLOCK = 4 << 20

RawRecord = tuple[str, int | None, int | None, Any, tuple[str, str] | None]
# (path, format, start byte or row group, end byte or row group (-1: to the end), first line)
Chunk = tuple[str, str, int, int, int]


def dead_letter_row(raw: RawRecord, reason: str, detail: str) -> dict[str, Any]:
    """The dead-letter row of a raw record: source, line, row, reason, detail, record
    (the JSONL line's text, or the CSV/Parquet row's columns)."""
    source, line, row, payload, _ = raw
    return {
        "source": source,
        "line": line,
        "row": row,
        "reason": reason,
        "detail": detail,
        "record": payload,
    }


def dead_letter_json(row: dict[str, Any]) -> str:
    """One dead-letter row as a JSON line; a `record` JSON cannot hold (keys of mixed
    types, say) is written as its repr, so writing a dead letter never fails."""
    try:
        return json.dumps(row, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return json.dumps({**row, "record": shown(row.get("record"))}, sort_keys=True, default=str)


def position(raw: RawRecord) -> tuple[str, int | None, int | None]:
    """(source, line, row) of a raw record: its place in file order (sortable)."""
    return raw[0], raw[1], raw[2]


def format_of(path: str, configured: str = "auto") -> str:
    """The format of `path`: `configured` unless "auto", else from its extension.

    Raises:
      ValueError: "auto" and an extension that names no format.
    """
    if configured != "auto":
        return configured
    name = path.lower().removesuffix(".gz")
    for extension, fmt in EXTENSIONS.items():
        if name.endswith(extension):
            return fmt
    raise ValueError(
        f"{path}: cannot tell the format from the extension (known: "
        f"{', '.join(EXTENSIONS)}, optionally .gz); set data.format"
    )


def expand_patterns(patterns: str) -> list[str]:
    """Every file matching a comma-separated list of paths or globs, sorted.

    Raises:
      FileNotFoundError: a pattern that matches no file (named in the message).
    """
    paths: set[str] = set()
    for pattern in filter(None, (p.strip() for p in patterns.split(","))):
        if FileSystems.get_scheme(pattern) is None:
            pattern = os.path.abspath(pattern)  # workers may run in another directory
        try:
            found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        except Exception as e:  # Beam raises BeamIOError for a missing non-glob path
            raise FileNotFoundError(f"{pattern}: cannot list files: {e}") from e
        if not found:
            raise FileNotFoundError(f"{pattern}: no file matches")
        paths.update(found)
    if not paths:
        raise FileNotFoundError(f"{patterns!r}: no file pattern given")
    return sorted(paths)


def _nest(columns: dict[str, Any], split_lists: bool) -> dict[str, Any]:
    """Drops absent cells and nests `prefix.name` columns (see the module docstring)."""
    row: dict[str, Any] = {}
    for name, value in columns.items():
        if value is None or (split_lists and value == ""):
            continue
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            value = dict(value)  # a Parquet map column arrives as (key, value) pairs
        prefix, dot, leaf = name.partition(".")
        if not dot:
            row[name] = value
            continue
        if split_lists and isinstance(value, str) and "|" in value:
            value = [v for v in value.split("|") if v]
        row.setdefault(prefix, {})[leaf] = value
    return row


def _open(path: str, fmt: str) -> Any:
    compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else CompressionTypes.AUTO
    return FileSystems.open(path, compression_type=compression)


def _compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def split_file(path: str, fmt: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Cuts one file into chunks that can be read independently (see module docstring)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        try:
            with _open(path, fmt) as f:
                num_row_groups = pq.ParquetFile(f).metadata.num_row_groups
        except Exception:  # a corrupt file: read_chunk reports it as a dead letter
            num_row_groups = 1
        for group in range(max(num_row_groups, 1)):
            yield path, fmt, group, group + 1, 1
        return
    if fmt == "csv" or _compressed(path) or chunk_bytes <= 0:
        yield path, fmt, 0, -1, 1
        return
    yield from _scan_line_chunks(path, fmt, chunk_bytes)


def _scan_line_chunks(path: str, fmt: str, chunk_bytes: int) -> Iterator[Chunk]:
    start, first_line, offset, newlines = 0, 1, 0, 0
    with _open(path, fmt) as f:
        while block := f.read(_SCAN_BLOCK):
            view_start = 0
            while offset + len(block) - start >= chunk_bytes:
                cut = block.find(b"\n", max(start + chunk_bytes - offset - 1, view_start))
                if cut < 0:
                    break
                end = offset + cut + 1  # the chunk ends just after a newline
                newlines += block.count(b"\n", view_start, cut + 1)
                yield path, fmt, start, end, first_line
                start, first_line, view_start = end, newlines + 1, cut + 1
            newlines += block.count(b"\n", view_start)
            offset += len(block)
    if offset > start or start == 0:
        yield path, fmt, start, -1, first_line


def read_chunk(chunk: Chunk, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[RawRecord]:
    """The raw records of one chunk (see `split_file`), in file order.

    A line or row over `max_row_bytes` is a `too_large` record. A corrupt or cut gzip
    stream ends with one `unreadable_file` or `truncated_gzip` record (see `lines`), a
    corrupt Parquet file or row group with one `unreadable_file` record; any other I/O
    error is raised so that the runner retries.
    """
    path, fmt, start, end, first_line = chunk
    if fmt == "parquet":
        from pipelines import parquet_rows  # noqa: PLC0415  (pyarrow only where needed)

        try:
            yield from _parquet_records(path, start, end, max_row_bytes)
        except parquet_rows.CorruptParquet as e:
            yield path, None, None, None, ("unreadable_file", f"{type(e).__name__}: {e}")
        return
    try:
        gzipped = CompressionTypes.detect_compression_type(path) == CompressionTypes.GZIP
        compression = CompressionTypes.UNCOMPRESSED if gzipped else CompressionTypes.AUTO
        with FileSystems.open(path, compression_type=compression) as f:
            if start:
                f.seek(start)
            lines = TextLines(
                f,
                max_line_bytes=max_row_bytes,
                gzip=gzipped,
                limit=end - start if end >= 0 else -1,
                size=_size(path) if gzipped else None,
            )
            if fmt == "csv":
                yield from _csv_records(path, lines, max_row_bytes)
            else:
                yield from _jsonl_records(path, lines, first_line, max_row_bytes)
            if lines.error:
                cut = lines.cut_text.decode("utf-8", "replace") if lines.cut_text else None
                yield path, None, None, cut, lines.error
    except (zlib.error, EOFError, gzip.BadGzipFile) as e:  # other compressions (Beam's reader)
        yield path, None, None, None, ("unreadable_file", f"{type(e).__name__}: {e}")


def _size(path: str) -> int | None:
    try:
        return FileSystems.get_filesystem(path).size(path)
    except Exception:  # only for a message: the read itself reports real I/O errors
        return None


def _too_large(length: int, max_row_bytes: int) -> tuple[str, str]:
    return "too_large", f"the row is {length} bytes > data.max_row_bytes {max_row_bytes}"


def _decode(raw: bytes) -> tuple[str, tuple[str, str] | None]:
    try:
        return raw.decode("utf-8").rstrip("\r\n"), None
    except UnicodeDecodeError as e:
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        return text, ("bad_encoding", f"not UTF-8 at byte {e.start}")


def _jsonl_records(
    path: str, lines: Iterable[tuple[bytes, int]], first_line: int, max_row_bytes: int
) -> Iterator[RawRecord]:
    for number, (raw, length) in enumerate(lines, start=first_line):
        if length > max_row_bytes:
            text = raw.decode("utf-8", errors="replace")
            yield path, number, None, text, _too_large(length, max_row_bytes)
            continue
        text, error = _decode(raw)
        if text.strip():
            yield path, number, None, text, error


def _csv_records(
    path: str, lines: Iterable[tuple[bytes, int]], max_row_bytes: int
) -> Iterator[RawRecord]:
    consumed: list[tuple[int, int]] = []  # (line number, bytes) of the row being read
    bad: list[RawRecord] = []

    def decoded() -> Iterator[str]:
        for number, (raw, length) in enumerate(lines, start=1):
            if length > max_row_bytes:
                text = raw.decode("utf-8", errors="replace")
                bad.append((path, number, None, text, _too_large(length, max_row_bytes)))
                continue
            text, error = _decode(raw)
            if error:
                bad.append((path, number, None, text, error))
                continue
            consumed.append((number, length))
            yield text + "\n"

    reader = csv.reader(decoded())
    header = None
    while True:
        consumed.clear()  # then it holds the lines of the next row only
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            cells, error = None, ("bad_csv", str(e))
        else:
            error = None
        yield from bad
        bad.clear()
        line = consumed[0][0] if consumed else None
        size = sum(length for _, length in consumed)
        if header is None and error is None:
            header = [cells[0].lstrip("\ufeff"), *cells[1:]] if cells else cells
            continue
        if error is None and not any(cells):
            continue
        if error is None and size > max_row_bytes:  # a row of several lines
            cells, error = ",".join(cells)[:PREFIX_BYTES], _too_large(size, max_row_bytes)
        if error is None and len(cells) != len(header):
            error = ("bad_csv", f"expected {len(header)} fields ({header}), got {len(cells)}")
        if error:
            yield path, line, None, cells, error
        else:
            yield path, line, None, _nest(dict(zip(header, cells, strict=True)), True), None
    yield from bad


def _parquet_records(
    path: str, first_group: int, end_group: int, max_row_bytes: int
) -> Iterator[RawRecord]:
    from pipelines import parquet_rows  # noqa: PLC0415

    with _open(path, "parquet") as f:
        for row, columns, size in parquet_rows.read_rows(f, first_group, end_group, max_row_bytes):
            if size:
                yield path, None, row, None, _too_large(size, max_row_bytes)
            else:
                yield path, None, row, _nest(columns, False), None


def head(
    files: Iterable[tuple[str, str]], count: int, max_row_bytes: int = MAX_ROW_BYTES
) -> Iterator[RawRecord]:
    """The first `count` raw records of `files` ([(path, format)]) in order, read in
    this process (a sample, e.g. to infer feature kinds; the files are not read further)."""
    read = 0
    for path, fmt in files:
        for chunk in split_file(path, fmt, chunk_bytes=0):
            for raw in read_chunk(chunk, max_row_bytes):
                if read >= count:
                    return
                read += 1
                yield raw


def iter_records(
    paths: Iterable[str], fmt: str = "auto", max_row_bytes: int = MAX_ROW_BYTES
) -> Iterator[RawRecord]:
    """Every raw record of `paths` in order, in this process (for small tables)."""
    for path in paths:
        file_format = format_of(path, fmt)
        for chunk in split_file(path, file_format, chunk_bytes=0):
            yield from read_chunk(chunk, max_row_bytes)
