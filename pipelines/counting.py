"""The counters every DoFn of the pipeline keeps, from which `manifest` reconciles each
input file: read = valid + dead-lettered.
"""

import collections

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines import records, sources

NAMESPACE = "twotower"
DEAD_LETTER = "dead_letter"
REQUESTS = "requests"
USERS = "users"


def counter_name(table: str, kind: str, path: str) -> str:
    """The per-file counter `<table>.<kind>:<path>` (kind: read, valid, dead_letter,
    unreadable), which `manifest` turns into the reconciliation block."""
    return f"{table}.{kind}:{path}"


class CountingDoFn(beam.DoFn):
    """Adds up counters per bundle and reports them once in `finish_bundle`.

    A Beam counter update per element costs a lookup in the metrics container; summing
    in a dict first is cheaper and reports the same committed totals (a retried bundle's
    counts are dropped with the bundle, as per-element updates would be).
    """

    def start_bundle(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._timestamps: list[int] = []

    def _count(self, name: str, value: int = 1) -> None:
        self._counts[name] += value

    def _dead_letter(
        self, table: str, raw: sources.RawRecord, error: Exception
    ) -> beam.pvalue.TaggedOutput:
        """Counts a rejected row (any exception, see `records.failure`) and returns its
        dead-letter output."""
        reason, detail = records.failure(error)
        path = raw[0]
        self._count(counter_name(table, "dead_letter", path))
        self._count(f"reason:{table}:{reason}")
        if reason in sources.UNREADABLE:
            self._count(counter_name(table, "unreadable", path))
        return beam.pvalue.TaggedOutput(DEAD_LETTER, sources.dead_letter_row(raw, reason, detail))

    def _count_duplicate(self, table: str, path: str, reason: str) -> None:
        """A row counted valid that turned out to repeat an earlier one."""
        self._count(counter_name(table, "valid", path), -1)
        self._count(counter_name(table, "dead_letter", path))
        self._count(f"reason:{table}:{reason}")

    def finish_bundle(self) -> None:
        for name, value in self._counts.items():
            Metrics.counter(NAMESPACE, name).inc(value)
        if self._timestamps:  # only min and max of this distribution are meaningful
            distribution = Metrics.distribution(NAMESPACE, "timestamp")
            distribution.update(min(self._timestamps))
            distribution.update(max(self._timestamps))
        self.start_bundle()
