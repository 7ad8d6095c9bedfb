"""The lines of a text file (or a chunk of one), each bounded in size, decompressed here
when gzipped so that a cut or corrupt stream is reported, not silently ended.

`TextLines` reads blocks, never a whole line at once, so one huge line cannot exhaust a
worker's memory: a line longer than the limit comes out as its first `PREFIX_BYTES` and
its length. Beam's gzip reader ends a cut stream without a word; here a gzip stream that
stops before its end marker sets `error` to `truncated_gzip`, and corrupt data to
`unreadable_file`, each with the compressed byte offset (within 256 bytes) and the
lines read before it.
The unterminated text before such a break is not handed out as a line (it is cut
short): it is kept in `cut_text`.
"""

import zlib
from collections.abc import Iterator
from typing import Any

BLOCK_BYTES = 1 << 20  # decompressed bytes handed on per step
COMPRESSED_BLOCK_BYTES = 64 << 10  # the precision of a corrupt spot's offset
PREFIX_BYTES = 1024  # what an oversized line keeps for its dead letter
_SALVAGE_STEP = 256  # compressed bytes per step when locating damage
_GZIP_WBITS = zlib.MAX_WBITS | 16


class TextLines:
    """Iterates over `(line, length)`: a line's bytes (with its newline) and its length
    without the line break; for a line longer than `max_line_bytes`, its first
    `PREFIX_BYTES` only.

    Attributes:
      error: None, or (reason, detail) when a gzip stream broke (set once iteration ends).
      cut_text: the unterminated text before the break (at most PREFIX_BYTES), or None.
    """

    def __init__(
        self,
        f: Any,
        *,
        max_line_bytes: int,
        gzip: bool = False,
        limit: int = -1,
        size: int | None = None,
    ):
        """
        Args:
          f: a binary file object opened without decompression.
          max_line_bytes: the longest line handed out whole.
          gzip: decompress `f` (every member of a multi-member file).
          limit: read at most this many bytes of `f` (-1: to its end; not with gzip).
          size: the file's size, for the error detail.
        """
        self._f = f
        self._max = max_line_bytes
        self._gzip = gzip
        self._limit = limit
        self._size = size
        self._break: tuple[str, int, str] | None = None  # (reason, compressed offset, why)
        self.error: tuple[str, str] | None = None
        self.cut_text: bytes | None = None

    def _raw_blocks(self) -> Iterator[bytes]:
        remaining = self._limit
        while remaining != 0:
            block = self._f.read(BLOCK_BYTES if remaining < 0 else min(BLOCK_BYTES, remaining))
            if not block:
                return
            if remaining > 0:
                remaining -= len(block)
            yield block

    def _salvage(self, decompressor: Any, data: bytes, offset: int) -> Iterator[bytes]:
        """Feeds `data` (where zlib failed) again in small steps, from the state before
        the failure, to hand out what precedes the damage and to locate it."""
        for start in range(0, len(data), _SALVAGE_STEP):
            try:
                out = decompressor.decompress(data[start : start + _SALVAGE_STEP])
            except zlib.error as e:
                self._break = ("unreadable_file", offset + start, f"corrupt ({e})")
                return
            if out:
                yield out
            if decompressor.eof:  # the damage is in what follows this member
                self._break = ("unreadable_file", offset + start, "corrupt after a member")
                return
        self._break = ("unreadable_file", offset, "corrupt")  # not reproduced: be safe

    def _gunzip(self) -> Iterator[bytes]:
        decompressor, started, position = zlib.decompressobj(_GZIP_WBITS), False, 0
        while data := self._f.read(COMPRESSED_BLOCK_BYTES):
            position += len(data)
            while data:
                before = decompressor.copy()  # zlib's error drops the output before it
                try:
                    out = decompressor.decompress(data, BLOCK_BYTES)
                except zlib.error:
                    yield from self._salvage(before, data, position - len(data))
                    return
                started = True
                if out:
                    yield out
                if decompressor.eof:  # the end of a member; another may follow
                    data = decompressor.unused_data
                    decompressor, started = zlib.decompressobj(_GZIP_WBITS), False
                else:
                    data = decompressor.unconsumed_tail
        if started:
            try:
                tail = decompressor.flush()
            except zlib.error as e:
                self._break = ("unreadable_file", position, f"corrupt ({e})")
                return
            if tail:
                yield tail
            if not decompressor.eof:
                self._break = ("truncated_gzip", position, "cut short (no end marker)")

    def _whole(self, line: bytes) -> tuple[bytes, int]:
        length = len(line.rstrip(b"\r\n")) if len(line) > self._max else len(line)
        return (line[:PREFIX_BYTES], length) if length > self._max else (line, length)

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        pending = bytearray()  # the start of an unfinished line
        oversized = 0  # > 0: the unfinished line is too long; its length so far
        lines = 0
        for block in self._gunzip() if self._gzip else self._raw_blocks():
            start = 0
            while (cut := block.find(b"\n", start)) >= 0:
                piece = block[start : cut + 1]
                start = cut + 1
                lines += 1
                if oversized:
                    yield bytes(pending), oversized + len(piece.rstrip(b"\r\n"))
                    pending.clear()
                    oversized = 0
                elif pending:
                    pending += piece
                    line = bytes(pending)
                    pending.clear()
                    yield self._whole(line)
                else:
                    yield self._whole(piece)
            rest = len(block) - start
            if oversized:
                oversized += rest
            elif len(pending) + rest > self._max + 2:  # longer than the limit plus "\r\n"
                oversized = len(pending) + rest
                pending += block[start : start + max(0, PREFIX_BYTES - len(pending))]
                del pending[PREFIX_BYTES:]
            else:
                pending += block[start:]
        if self._break:
            reason, offset, why = self._break
            total = f" of {self._size}" if self._size is not None else ""
            self.error = (
                reason,
                f"gzip stream {why} at compressed byte {offset}{total}; {lines} lines read "
                "before it",
            )
            self.cut_text = bytes(pending[:PREFIX_BYTES]) if pending else None
        elif oversized:
            yield bytes(pending), oversized
        elif pending:
            yield self._whole(bytes(pending))
