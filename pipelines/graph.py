"""The Beam graph of `preprocess`: read and validate the logs, drop repeated request ids,
group by user into examples, write shards, vocabulary and exposure counts, dead letters,
the training split's statistics of numeric and vector user features, and the item text
embeddings.

Every step is labelled; its options are plain picklable values (docs/pipeline.md).
"""

import dataclasses
import json
from typing import Any

import apache_beam as beam

from common import contracts
from common.config import Config
from pipelines import (
    duplicates,
    examples,
    feature_stats,
    fs,
    item_text,
    manifest,
    records,
    shards,
    sorted_runs,
    transforms,
)
from pipelines.feature_kinds import DENSE, FeatureKinds

SECONDS_PER_DAY = 86_400


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Resolved input files: [(path, format)] per table, and the eval cut."""

    requests: list[tuple[str, str]]
    catalog: list[str]
    users: list[tuple[str, str]]
    eval_from: int
    patterns: dict[str, str]


def eval_from_days(max_timestamp: int, days: int) -> int:
    """First eval timestamp when the last `days` UTC calendar days of the logs are eval."""
    return (max_timestamp // SECONDS_PER_DAY - days + 1) * SECONDS_PER_DAY


def build_pipeline(
    pipeline: beam.Pipeline,
    inputs: Inputs,
    staging: str,
    options: examples.ExampleOptions,
    config: Config,
    chunk_bytes: int,
    *,
    kinds: FeatureKinds = FeatureKinds(),  # noqa: B008  (frozen, shared safely)
    num_items: int = 0,
    text: dict[str, Any] | None = None,
) -> None:
    """Adds the preprocessing steps to `pipeline`; they write into `staging`.

    Args:
      kinds: every feature's kind (`feature_kinds`); others are categorical.
      num_items: catalog items (the rows of the text embedding arrays).
      text: `item_text.encoder_description` when there are item text features.
    """
    days = config.data.eval_days if options.split == "time" and not options.eval_from else 0
    limits = record_limits(config)
    catalog_lines = pipeline | "ReadCatalog" >> beam.io.ReadFromText(
        fs.join(staging, contracts.CATALOG_FILE)
    )
    catalog_ids = catalog_lines | "CatalogIds" >> beam.Map(
        lambda line: (json.loads(line)["item_id"], None)
    )
    names = item_text.text_features(kinds)
    if names and text:
        _ = catalog_lines | "ItemText" >> item_text.EmbedItemTexts(
            names,
            staging,
            num_items,
            config.data.text_encoder,
            text["dim"],
            config.data.text_batch_size,
        )
    parsed = (
        pipeline
        | "ReadRequests"
        >> transforms.ReadRecords(inputs.requests, chunk_bytes, limits.max_row_bytes)
        | "Validate"
        >> beam.ParDo(
            transforms.ParseRequestFn(options, limits, kinds), beam.pvalue.AsDict(catalog_ids)
        ).with_outputs(transforms.DEAD_LETTER, transforms.SEEN, main="requests")
    )
    spill_bytes = config.data.group_spill_mb * 2**20
    runs_dir = fs.join(staging, sorted_runs.RUNS_DIR)
    kept = parsed[transforms.SEEN] | "Duplicates" >> duplicates.FindDuplicates(
        fs.join(runs_dir, "request_ids"), spill_bytes
    )
    keyed = parsed["requests"] | "KeyByUser" >> beam.Map(lambda r: (r["user_id"], r))
    user_dead_letters = []
    if inputs.users:
        users = (
            pipeline
            | "ReadUsers" >> transforms.ReadRecords(inputs.users, chunk_bytes, limits.max_row_bytes)
            | "ValidateUsers"
            >> beam.ParDo(transforms.ParseUserFn(limits, kinds)).with_outputs(
                transforms.DEAD_LETTER, main="users"
            )
        )
        user_dead_letters.append(users[transforms.DEAD_LETTER])
        grouped = {"requests": keyed, "users": users["users"]} | "JoinUsers" >> _JoinUsers(
            fs.join(runs_dir, "users"), spill_bytes
        )
    else:
        by_user = (
            sorted_runs.GroupByKeyOnDisk(fs.join(runs_dir, "users"), spill_bytes)
            if spill_bytes
            else beam.GroupByKey()
        )
        grouped = (
            keyed
            | "GroupByUser" >> by_user
            | "NoUserTable" >> beam.MapTuple(lambda user, requests: (user, (requests, [])))
        )
    side = {"duplicated": beam.pvalue.AsDict(kept[duplicates.DUPLICATES])}
    if days:
        side["eval_from"] = beam.pvalue.AsSingleton(
            kept[duplicates.EXPOSURES]
            | "Timestamps" >> beam.Map(lambda exposure: exposure[0])
            | "LastTimestamp" >> beam.CombineGlobally(lambda ts: max(ts, default=0))
            | "EvalFrom" >> beam.Map(eval_from_days, days)
        )
    cut = side.get("eval_from", options.eval_from) if options.split == "time" else None
    _ = (
        kept[duplicates.EXPOSURES]
        | "Exposures" >> transforms.CountExposures(cut)
        | "WriteExposures"
        >> beam.io.WriteToText(
            fs.join(staging, manifest.EXPOSURE_COUNTS), num_shards=1, shard_name_template=""
        )
    )
    splits = grouped | "Examples" >> beam.ParDo(
        transforms.UserExamplesFn(options), **side
    ).with_outputs(
        contracts.TRAIN, contracts.EVAL, transforms.DEAD_LETTER, transforms.DUPLICATE_REQUESTS
    )
    dead_letter_dir = fs.join(staging, contracts.DEAD_LETTER_DIR)
    _ = (
        (
            parsed[transforms.DEAD_LETTER],
            kept[transforms.DEAD_LETTER],
            splits[transforms.DUPLICATE_REQUESTS],
        )
        | "FlattenRequestDeadLetters" >> beam.Flatten()
        | "DeadLetterRequests" >> transforms.WriteDeadLetters(fs.join(dead_letter_dir, "requests"))
    )
    if inputs.users:  # duplicate_user rows come out of the join
        user_dead_letters.append(splits[transforms.DEAD_LETTER])
        _ = (
            user_dead_letters
            | "FlattenUserDeadLetters" >> beam.Flatten()
            | "DeadLetterUsers" >> transforms.WriteDeadLetters(fs.join(dead_letter_dir, "users"))
        )
    _write_splits(splits, staging, config.data.num_shards, config.data.shard_spill_mb)
    prefix = contracts.USER_FEATURE_PREFIX
    dense = {prefix + name: kind for name, kind in kinds.named(prefix, *DENSE).items()}
    if dense:
        _ = (
            splits[contracts.TRAIN]
            | "UserFeatureStats"
            >> feature_stats.ComputeUserStats(dense, config.data.numeric_buckets)
            | "WriteUserFeatureStats"
            >> beam.io.WriteToText(
                fs.join(staging, feature_stats.USER_STATS), num_shards=1, shard_name_template=""
            )
        )
    _ = (
        splits[contracts.TRAIN]
        | "Vocabularies" >> transforms.ComputeVocabularies(frozenset(dense))
        | "WriteVocabularies"
        >> beam.io.WriteToText(
            fs.join(staging, manifest.VOCABULARY_COUNTS), num_shards=1, shard_name_template=""
        )
    )


def _unpack_join(user: str, tagged: Any) -> tuple[str, tuple[list[Any], list[Any]]]:
    """(user, [(0, request) | (1, user row)]) -> (user, (requests, user rows))."""
    rows: tuple[list[Any], list[Any]] = ([], [])
    for tag, row in tagged:
        rows[tag].append(row)
    return user, rows


@beam.ptransform_fn
def _JoinUsers(  # noqa: N802
    tables: dict[str, beam.PCollection], runs_dir: str, spill_bytes: int
) -> beam.PCollection:
    """(user, (requests, user rows)): a CoGroupByKey, on disk when `spill_bytes` > 0."""
    if not spill_bytes:
        return (
            tables
            | "CoGroup" >> beam.CoGroupByKey()
            | "Unpack" >> beam.MapTuple(lambda user, g: (user, (g["requests"], g["users"])))
        )
    tagged = [
        tables[name] | f"Tag{name.title()}" >> beam.MapTuple(lambda k, v, t=tag: (k, (t, v)))
        for tag, name in enumerate(("requests", "users"))
    ]
    return (
        tuple(tagged)
        | "Group" >> sorted_runs.GroupByKeyOnDisk(runs_dir, spill_bytes)
        | "Unpack" >> beam.MapTuple(_unpack_join)
    )


def _write_splits(splits: Any, staging: str, num_shards: int, spill_mb: int = 0) -> None:
    """Reproducible shards (`shards.WriteShards`) with their stats, or, with 0 shards,
    as many as the runner chooses (Beam's writer; the manifest reads them back)."""
    stats = []
    for split in (contracts.TRAIN, contracts.EVAL):
        title = split.title()
        if num_shards:
            stats.append(
                splits[split]
                | f"Write{title}"
                >> shards.WriteShards(staging, split, num_shards, spill_mb * 2**20)
            )
            continue
        _ = (
            splits[split]
            | f"Serialize{title}" >> beam.Map(examples.to_tf_example)
            | f"Write{title}"
            >> beam.io.WriteToTFRecord(fs.join(staging, split), file_name_suffix=".tfrecord.gz")
        )
    if stats:
        _ = (
            stats
            | "FlattenShardStats" >> beam.Flatten()
            | "ShardStatsJson" >> beam.Map(json.dumps, sort_keys=True)
            | "WriteShardStats"
            >> beam.io.WriteToText(
                fs.join(staging, manifest.SHARD_STATS), num_shards=1, shard_name_template=""
            )
        )


def record_limits(config: Config) -> records.RecordLimits:
    """The `data` settings that bound a row, as the pipeline's steps take them."""
    data = config.data
    return records.RecordLimits(
        min_timestamp=data.min_timestamp,
        max_timestamp=data.max_timestamp,
        max_id_bytes=data.max_id_bytes,
        max_row_bytes=data.max_row_bytes,
    )
