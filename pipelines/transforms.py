"""Beam transforms of the preprocessing pipeline; each step labelled, each DoFn picklable.

Bad records leave through the `dead_letter` tagged output with their reason, source
file and line; Beam counters count every record in and out so the manifest reconciles.
"""

import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from pipelines import examples, records

DEAD_LETTER = "dead_letter"
NAMESPACE = "twotower"


@beam.ptransform_fn
def ReadLinesWithPosition(pcoll: beam.PCollection, pattern: str) -> beam.PCollection:  # noqa: N802
    """(file, line number, text) for every line of the files matching `pattern`.

    Beam's ReadFromText drops line numbers, which the dead-letter output must name, so
    files are read whole by one worker each (parallel across files; gzip by extension).
    """
    return (
        pcoll
        | "Match" >> fileio.MatchFiles(pattern)
        | "Open" >> fileio.ReadMatches()
        | "Lines" >> beam.FlatMap(_numbered_lines)
    )


def _numbered_lines(readable: fileio.ReadableFile) -> Iterator[tuple[str, int, str]]:
    path = readable.metadata.path
    with readable.open() as f:
        for number, raw in enumerate(f, start=1):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if text.strip():
                yield path, number, text


class ParseRequestFn(beam.DoFn):
    """Validates request lines against the rules of `records` and the item catalog."""

    def process(self, element: tuple[str, int, str], catalog: dict[str, int]) -> Iterator[Any]:
        path, line, text = element
        Metrics.counter(NAMESPACE, f"read:{path}").inc()
        try:
            request, repairs = records.parse_request_line(text)
            unknown = [item for item in request["recalled"] if item not in catalog]
            if unknown:
                raise records.BadRecord("unknown_item", f"items not in the catalog: {unknown[:5]}")
        except records.BadRecord as bad:
            Metrics.counter(NAMESPACE, f"dead_letter:{path}").inc()
            Metrics.counter(NAMESPACE, f"reason:{bad.reason}").inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                {
                    "source": path,
                    "line": line,
                    "reason": bad.reason,
                    "detail": bad.detail,
                    "record": text,
                },
            )
            return
        Metrics.counter(NAMESPACE, f"valid:{path}").inc()
        for name, count in repairs.items():
            Metrics.counter(NAMESPACE, f"repair:{name}").inc(count)
        yield request


class UserExamplesFn(beam.DoFn):
    """All examples of one user (grouped by user id), tagged with their split."""

    def __init__(self, options: examples.ExampleOptions):
        self._options = options

    def process(self, element: tuple[str, Iterable[dict[str, Any]]]) -> Iterator[Any]:
        _, user_requests = element
        for split, example in examples.user_examples(user_requests, self._options):
            Metrics.counter(NAMESPACE, f"examples:{split}").inc()
            Metrics.counter(NAMESPACE, f"space_a:{split}").inc(len(example["space_a"]))
            Metrics.counter(NAMESPACE, f"space_b:{split}").inc(len(example["space_b"]))
            yield beam.pvalue.TaggedOutput(split, example)


def _vocabulary_tokens(example: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield "user_id", example["user_id"]
    yield "item_id", example["item_id"]
    for name, tokens in example.items():
        if name.startswith(examples.USER_FEATURE_PREFIX):
            for token in tokens:
                yield name, token


def _sorted_vocabulary(element: tuple[str, Any]) -> str:
    feature, counted = element
    # Most frequent first, ties by token, so the file is the same on every runner.
    ordered = sorted(counted, key=lambda pair: (-pair[1], pair[0]))
    return json.dumps({"feature": feature, "tokens": ordered})


@beam.ptransform_fn
def ComputeVocabularies(train: beam.PCollection) -> beam.PCollection:  # noqa: N802
    """One JSON line per feature: {"feature", "tokens": [[token, count], ...]}."""
    return (
        train
        | "Tokens" >> beam.FlatMap(_vocabulary_tokens)
        | "Count" >> beam.combiners.Count.PerElement()
        | "ByFeature" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
        | "Group" >> beam.GroupByKey()
        | "Sort" >> beam.Map(_sorted_vocabulary)
    )
