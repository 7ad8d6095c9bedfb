"""Duplicate request ids: the first valid row of an id (in file order: source, then line
or row) is kept, every later one is dead-lettered as `duplicate_request`.

Memory grows with the duplicates, not the logs. Every valid request sends a small entry
`(request_id, (position, timestamp, exposed items, clicked?, user_id))` (the items as one
string, `pack`: a string per item would cost ~50 bytes each in the shuffle); one
CombinePerKey keeps, per id, the entry first in file order and the place of the others.
From it come:
  - the exposures of the kept requests only (`transforms.CountExposures` counts them);
  - `{request_id: first position}` of the ids seen more than once, the side input with
    which `transforms.UserExamplesFn` drops the later clicked rows where the requests
    are already grouped by user;
  - the dead letters of the later rows without a click (they are never grouped).
A duplicate's dead letter holds its request_id, user_id and timestamp as `record` (the
row itself is not carried through the shuffle); `source` and `line`/`row` point at it.
"""

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from pipelines import sorted_runs
from pipelines.counting import DEAD_LETTER, REQUESTS, CountingDoFn

REASON = "duplicate_request"
DUPLICATES = "duplicates"
EXPOSURES = "exposures"

Position = tuple[str, int | None, int | None]  # sources.position: (source, line, row)
# (position, timestamp, exposed items packed, has a click, user_id)
Entry = tuple[Position, int, str, bool, str]
_SEPARATOR = "\x1f"  # a control character: never in a valid id (records.check_texts)
# what is kept of a later row: (position, timestamp, has a click, user_id)
Later = tuple[Position, int, bool, str]


def pack(items: list[str]) -> str:
    """Item ids as one string (valid ids hold no control character)."""
    return _SEPARATOR.join(items)


def unpack(packed: str) -> tuple[str, ...]:
    return tuple(packed.split(_SEPARATOR)) if packed else ()


def _later(entry: Entry) -> Later:
    position, timestamp, _, clicked, user_id = entry
    return tuple(position), timestamp, clicked, user_id


def _keep_first(
    first: Entry | None, entry: Entry, later: tuple[Later, ...]
) -> tuple[Entry, tuple[Later, ...]]:
    if first is None:
        return entry, later
    if tuple(entry[0]) < tuple(first[0]):
        return entry, (*later, _later(first))
    return first, (*later, _later(entry))


class FirstRowFn(beam.CombineFn):
    """Combines the entries of one request id into (first entry, later rows)."""

    def create_accumulator(self) -> tuple[Entry | None, tuple[Later, ...]]:
        return None, ()

    def add_input(self, accumulator: Any, entry: Entry) -> Any:
        first, later = accumulator
        return _keep_first(first, entry, tuple(later))

    def merge_accumulators(self, accumulators: Iterable[Any]) -> Any:
        first, later = None, ()
        for other_first, other_later in accumulators:
            later += tuple(tuple(row) for row in other_later)
            if other_first is not None:
                first, later = _keep_first(first, other_first, later)
        return first, later

    def extract_output(self, accumulator: Any) -> Any:
        return accumulator


def where(position: Position) -> str:
    """`source:line` or `source row N`, for messages."""
    source, line, row = position
    return f"{source}:{line}" if line is not None else f"{source} row {row}"


def dead_letter(
    request_id: str, position: Position, first: Position, user_id: str, timestamp: int
) -> dict[str, Any]:
    """The dead-letter row of a later row with `request_id` (see the module docstring)."""
    source, line, row = position
    return {
        "source": source,
        "line": line,
        "row": row,
        "reason": REASON,
        "detail": f"request_id {request_id!r} first at {where(first)}",
        "record": {"request_id": request_id, "user_id": user_id, "timestamp": timestamp},
    }


class KeepFirstFn(CountingDoFn):
    """(request_id, (first entry, later rows)) -> the kept request's (timestamp, exposed
    items); tagged: `duplicates` (request_id, first position) for an id seen more than
    once, `dead_letter` rows of its later rows without a click, which are counted out of
    the valid requests (and the requests without clicks) here."""

    def process(self, element: tuple[str, Any]) -> Iterator[Any]:
        request_id, (first, later) = element
        position, timestamp, exposed, _, _ = first
        self._timestamps.append(timestamp)
        yield timestamp, unpack(exposed)
        if not later:
            return
        position = tuple(position)
        yield beam.pvalue.TaggedOutput(DUPLICATES, (request_id, position))
        for row_position, row_timestamp, clicked, user_id in later:
            if clicked:  # UserExamplesFn drops it, where its clicks are
                continue
            self._count_duplicate(REQUESTS, row_position[0], REASON)
            self._count("requests_without_clicks", -1)
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                dead_letter(request_id, tuple(row_position), position, user_id, row_timestamp),
            )


def _first_row(request_id: str, entries: Iterable[Entry]) -> tuple[str, Any]:
    """FirstRowFn over one id's grouped entries (what CombinePerKey computes)."""
    combine = FirstRowFn()
    accumulator = combine.create_accumulator()
    for entry in entries:
        accumulator = combine.add_input(accumulator, entry)
    return request_id, combine.extract_output(accumulator)


@beam.ptransform_fn
def FindDuplicates(  # noqa: N802
    seen: beam.PCollection, runs_dir: str = "", spill_bytes: int = 0
) -> dict[str, beam.PCollection]:
    """The kept requests' exposures, the duplicated ids and the unclicked duplicates.

    Args:
      seen: (request_id, entry) of every valid request (`transforms.ParseRequestFn`).
      runs_dir, spill_bytes: with `spill_bytes` > 0 the entries are grouped by id in
        sorted runs on disk (`sorted_runs.GroupByKeyOnDisk`) instead of CombinePerKey,
        whose accumulators, one per request id, the DirectRunner holds in memory.

    Returns:
      {"exposures": (timestamp, exposed items) of each kept request, "duplicates":
      (request_id, first position) of each id seen more than once, "dead_letter": the
      dead-letter rows of the later rows without a click}.
    """
    if spill_bytes:
        firsts = (
            seen
            | "GroupById" >> sorted_runs.GroupByKeyOnDisk(runs_dir, spill_bytes)
            | "FirstPerId" >> beam.MapTuple(_first_row)
        )
    else:
        firsts = seen | "FirstPerId" >> beam.CombinePerKey(FirstRowFn())
    kept = firsts | "KeepFirst" >> beam.ParDo(KeepFirstFn()).with_outputs(
        DUPLICATES, DEAD_LETTER, main=EXPOSURES
    )
    return {
        EXPOSURES: kept[EXPOSURES],
        DUPLICATES: kept[DUPLICATES],
        DEAD_LETTER: kept[DEAD_LETTER],
    }
