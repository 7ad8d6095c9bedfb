"""Beam transforms of the preprocessing pipeline; each step labelled, each DoFn picklable.

DoFns hold only their options (no clients, no paths, no module state), so any runner can
pickle and retry them. Bad records leave through the `dead_letter` tagged output with
their reason, source file and line (or row); Beam counters count every record in and out
per input file, so the manifest reconciles (read = valid + dead-lettered).
"""

import dataclasses
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from common import contracts
from pipelines import duplicates, examples, records, sources
from pipelines.counting import (  # noqa: F401  (re-exported: the pipeline's names)
    DEAD_LETTER,
    NAMESPACE,
    REQUESTS,
    USERS,
    CountingDoFn,
    counter_name,
)
from pipelines.feature_kinds import FeatureKinds

SEEN = "seen"
DUPLICATE_REQUESTS = "duplicate_requests"


@beam.ptransform_fn
def ReadRecords(  # noqa: N802
    pbegin: beam.pvalue.PBegin,
    files: list[tuple[str, str]],
    chunk_bytes: int = sources.CHUNK_BYTES,
    max_row_bytes: int = sources.MAX_ROW_BYTES,
) -> beam.PCollection:
    """Raw records of `files` ([(path, format)]), read in parallel chunks.

    Args:
      pbegin: the pipeline.
      files: resolved paths with their formats (`sources.expand_patterns`, `format_of`).
      chunk_bytes: target chunk size of uncompressed JSONL files (0: whole files).
      max_row_bytes: a longer line or row becomes a `too_large` record, unparsed.

    Returns:
      A PCollection of raw records (see `pipelines.sources`).
    """
    return (
        pbegin
        | "Files" >> beam.Create(files)
        | "Split" >> beam.FlatMapTuple(sources.split_file, chunk_bytes=chunk_bytes)
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.FlatMap(sources.read_chunk, max_row_bytes=max_row_bytes)
    )


class ParseRequestFn(CountingDoFn):
    """Validates raw request records against `records` and the catalog.

    Main output: the compact record of `examples.request_positives`, with its
    `position` in file order, for each valid request with at least one click. Tagged
    outputs: `dead_letter` rows (any exception while checking a row dead-letters it, see
    `records.failure`) and, as `seen`, every valid request's entry for
    `duplicates.FindDuplicates` (clicks or not: the exposure propensities count them
    all). User features are checked against `kinds` (others are categorical).
    """

    def __init__(
        self,
        options: examples.ExampleOptions,
        limits: records.RecordLimits = records.DEFAULT_LIMITS,
        kinds: FeatureKinds = FeatureKinds(),  # noqa: B008  (frozen, shared safely)
    ):
        self._options = options
        self._limits = limits
        # Without feature kinds, the two-argument call of before (tests replace it).
        self._kinds = (kinds,) if kinds.kinds else ()

    def process(self, raw: sources.RawRecord, catalog: dict[str, Any]) -> Iterator[Any]:
        path = raw[0]
        self._count(counter_name(REQUESTS, "read", path))
        try:
            if raw[4]:
                raise records.BadRecord(*raw[4])
            request, repairs = records.validate_request(
                records.decode(raw[3]), self._limits, *self._kinds
            )
            unknown = [item for item in request["recalled"] if item not in catalog]
            if unknown:
                raise records.BadRecord(
                    "unknown_item", f"items not in the catalog: {records.shown(unknown[:5])}"
                )
            compact = (
                examples.request_positives(request, self._options) if request["clicked"] else None
            )
        except Exception as error:  # one bad row never stops the pipeline
            yield self._dead_letter(REQUESTS, raw, error)
            return
        self._count(counter_name(REQUESTS, "valid", path))
        for name, value in repairs.items():
            self._count(f"repair:{name}", value)
        position = sources.position(raw)
        clicked = compact is not None
        entry = (
            position,
            request["timestamp"],
            duplicates.pack(request["exposed"]),
            clicked,
            request["user_id"],
        )
        yield beam.pvalue.TaggedOutput(SEEN, (request["request_id"], entry))
        if not clicked:
            self._count("requests_without_clicks")
            return
        compact["position"] = position
        yield compact


class ParseUserFn(CountingDoFn):
    """Validates user-table rows: (user_id, (position, features, raw)) or a dead letter;
    features are checked against `kinds` (others are categorical)."""

    def __init__(
        self,
        limits: records.RecordLimits = records.DEFAULT_LIMITS,
        kinds: FeatureKinds = FeatureKinds(),  # noqa: B008  (frozen, shared safely)
    ):
        self._limits = limits
        self._kinds = (kinds,) if kinds.kinds else ()

    def process(self, raw: sources.RawRecord) -> Iterator[Any]:
        path = raw[0]
        self._count(counter_name(USERS, "read", path))
        try:
            if raw[4]:
                raise records.BadRecord(*raw[4])
            user_id, features = records.validate_user(
                records.decode(raw[3]), self._limits, *self._kinds
            )
        except Exception as error:  # one bad row never stops the pipeline
            yield self._dead_letter(USERS, raw, error)
            return
        self._count(counter_name(USERS, "valid", path))
        position = (path, raw[1] if raw[1] is not None else raw[2])
        yield user_id, (position, features, raw)


class UserExamplesFn(CountingDoFn):
    """All examples of one user, tagged with their split.

    Input: (user_id, (compact requests, user-table rows)). Of several rows for one user
    the first in file order is used and the others are dead-lettered as duplicate_user
    (tag `dead_letter`). A request whose id `duplicates` maps to another position is
    dropped and dead-lettered as duplicate_request (tag `duplicate_requests`).
    """

    def __init__(self, options: examples.ExampleOptions):
        self._options = options

    def _profile(self, user_id: str, profiles: Iterable[Any]) -> Iterator[Any]:
        """Yields the duplicate_user dead letters; returns the first row's features."""
        profile, first = None, None
        for position, features, raw in sorted(profiles, key=lambda p: p[0]):
            if profile is None:
                profile, first = features, position
                continue
            self._count_duplicate(USERS, raw[0], "duplicate_user")
            detail = f"user_id {user_id} already at {first[0]}:{first[1]}"
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, sources.dead_letter_row(raw, "duplicate_user", detail)
            )
        return profile

    def process(
        self,
        element: tuple[str, tuple[Iterable[dict[str, Any]], Iterable[Any]]],
        eval_from: int | None = None,
        duplicated: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        user_id, (user_requests, profiles) = element
        profile = yield from self._profile(user_id, profiles)
        kept = []
        for request in user_requests:
            first = duplicated.get(request["request_id"]) if duplicated else None
            if first is None or tuple(first) == tuple(request["position"]):
                kept.append(request)
                continue
            position = tuple(request["position"])
            self._count_duplicate(REQUESTS, position[0], duplicates.REASON)
            row = duplicates.dead_letter(
                request["request_id"], position, tuple(first), user_id, request["timestamp"]
            )
            yield beam.pvalue.TaggedOutput(DUPLICATE_REQUESTS, row)
        options = self._options
        if eval_from is not None:
            options = dataclasses.replace(options, eval_from=eval_from)
        for split, example in examples.user_examples(kept, options, profile):
            self._count(f"examples:{split}")
            self._count(f"space_a:{split}", len(example["space_a"]))
            self._count(f"space_b:{split}", len(example["space_b"]))
            yield beam.pvalue.TaggedOutput(split, example)


def _vocabulary_tokens(
    example: dict[str, Any], dense: frozenset[str] = frozenset()
) -> Iterator[tuple[str, str]]:
    yield "user_id", example["user_id"]
    yield "item_id", example["item_id"]
    for name, tokens in example.items():
        if name.startswith(contracts.USER_FEATURE_PREFIX) and name not in dense:
            for token in tokens:
                yield name, token


def _sorted_vocabulary(element: tuple[str, Any]) -> str:
    feature, counted = element
    # Most frequent first, ties by token, so the file is the same on every runner.
    ordered = sorted(counted, key=lambda pair: (-pair[1], pair[0]))
    return json.dumps({"feature": feature, "tokens": ordered})


@beam.ptransform_fn
def ComputeVocabularies(  # noqa: N802
    train: beam.PCollection, dense: frozenset[str] = frozenset()
) -> beam.PCollection:
    """One JSON line per feature: {"feature", "tokens": [[token, count], ...]}.

    Counted over the training split only: user ids, clicked item ids (the item
    frequency for logQ) and every categorical user feature (`dense`: the "user.<name>"
    features that are numeric or vector, which have no vocabulary).
    """
    return (
        train
        | "Tokens" >> beam.FlatMap(_vocabulary_tokens, dense=dense)
        | "Count" >> beam.combiners.Count.PerElement()
        | "ByFeature" >> beam.MapTuple(lambda key, n: (key[0], (key[1], n)))
        | "Group" >> beam.GroupByKey()
        | "Sort" >> beam.Map(_sorted_vocabulary)
    )


def _training_exposures(
    element: tuple[int, tuple[str, ...]], eval_from: int | None = None
) -> Iterator[tuple[str, int]]:
    timestamp, items = element
    if eval_from is None or timestamp < eval_from:
        yield "", 1  # one more training request (the key "" is no item id)
        for item in items:
            yield item, 1


@beam.ptransform_fn
def CountExposures(  # noqa: N802
    exposures: beam.PCollection, eval_from: Any = None
) -> beam.PCollection:
    """One JSON line [item_id, exposures] per item exposed in the training period, and
    ["", training requests]: what the exposure propensities are made of.

    Args:
      exposures: (timestamp, exposed items) of every valid request.
      eval_from: the first eval timestamp (an int or a singleton side input), or None
        when no request is held out by time (leave-last-click-out counts every request).
    """
    side = {} if eval_from is None else {"eval_from": eval_from}
    return (
        exposures
        | "TrainingExposures" >> beam.FlatMap(_training_exposures, **side)
        | "Sum" >> beam.CombinePerKey(sum)
        | "Json" >> beam.MapTuple(lambda item, n: json.dumps([item, n]))
    )


@beam.ptransform_fn
def WriteDeadLetters(rows: beam.PCollection, prefix: str) -> beam.PCollection:  # noqa: N802
    """Dead-letter rows as JSON Lines files `<prefix>-SSSSS-of-NNNNN.jsonl`."""
    return (
        rows
        | "Json" >> beam.Map(sources.dead_letter_json)
        | "Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
    )
