"""`twotower preprocess`: request logs -> a dataset directory the trainer reads.

The dataset is built in a sibling staging folder (`<output>.tmp-<random>`) and moved into
place at the end, `manifest.json` last, so a crashed run never leaves a directory that
looks complete. When more than `data.max_bad_fraction` of a table's rows are
dead-lettered, or no request is valid, or no example is for training, the dead letters
are kept in `<output>.failed/dead_letter/` with a `failure.json`, the existing output is
left alone and `DataError` names the input and the counts.

Feature kinds (`feature_kinds`) are settled before the pipeline starts: the declared
ones, the catalog's inferred over all its rows, the user features' from the first
`feature_kinds.SAMPLE_ROWS` rows of the request logs and of the user table.
"""

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import yaml
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from common import contracts
from common.config import Config
from pipelines import (
    catalog,
    examples,
    feature_kinds,
    fs,
    item_text,
    manifest,
    movielens,
    records,
    sorted_runs,
    sources,
    transforms,
)
from pipelines.feature_kinds import FeatureKinds
from pipelines.graph import Inputs, build_pipeline, eval_from_days, record_limits
from pipelines.runner_options import RunnerOptions

DEFAULT_BEAM_ARGS = tuple(RunnerOptions().pipeline_args())
FAILED_SUFFIX = ".failed"


class DataError(ValueError):
    """The input data cannot be turned into a dataset; the message names the file."""


def _files(patterns: str, fmt: str, what: str) -> list[tuple[str, str]]:
    try:
        return [(path, sources.format_of(path, fmt)) for path in sources.expand_patterns(patterns)]
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"{what}: {e}") from e


def _resolve_inputs(config: Config, staging: str) -> Inputs:
    data = config.data
    requests, items, users, eval_from = data.input, data.catalog, data.users, data.eval_from
    if data.source == "movielens-100k":
        written = movielens.write_movielens_logs(
            movielens.locate_movielens_100k(),
            fs.join(staging, "_logs"),
            data.min_click_rating,
            recall_size=data.recall_size,
            popularity_weight=data.recall_popularity_weight,
            title_text=f"{contracts.ITEM_FEATURE_PREFIX}title" in data.text_features,
        )
        requests, items = written["requests"], written["catalog"]
    elif data.source == "simulator":
        world_path = fs.join(fs.absolute(data.input), contracts.SIM_WORLD_SUMMARY)
        if not fs.exists(world_path):
            raise DataError(
                f"data.input={data.input!r}: no {contracts.SIM_WORLD_SUMMARY}; "
                "run `twotower simulate`"
            )
        world = json.loads("\n".join(fs.read_lines(world_path)))
        eval_from = data.eval_from or int(world["eval_from"])
        requests = fs.join(fs.absolute(data.input), contracts.SIM_REQUESTS)
        items = fs.join(fs.absolute(data.input), contracts.SIM_ITEMS)
    elif not data.input or not data.catalog:
        raise DataError("data.source=logs needs data.input (request logs) and data.catalog")
    catalog_files = _files(items, data.format, "data.catalog")
    return Inputs(
        requests=_files(requests, data.format, "data.input"),
        catalog=[path for path, _ in catalog_files],
        users=_files(users, data.format, "data.users") if users else [],
        eval_from=eval_from,
        patterns={"requests": requests, "catalog": items, "users": users},
    )


def _declared(config: Config) -> tuple[FeatureKinds, dict[str, Any] | None]:
    """The declared kinds and the text encoder's description; fails before any work
    when text features are declared without the `text` extra."""
    try:
        declared = feature_kinds.declared_kinds(config.data)
        names = item_text.text_features(declared)
        return declared, item_text.encoder_description(config.data.text_encoder, names)
    except ValueError as e:  # TextExtraMissing, a contradicting declaration
        raise DataError(str(e)) from e


def _user_kinds(inputs: Inputs, declared: FeatureKinds, max_row_bytes: int) -> FeatureKinds:
    """User feature kinds: declared, else inferred from the first rows of the inputs."""
    counter = feature_kinds.KindCounter()
    for files, observe in (
        (inputs.requests, counter.observe_request),
        (inputs.users, counter.observe_user),
    ):
        for raw in sources.head(files, feature_kinds.SAMPLE_ROWS, max_row_bytes):
            if raw[4] is None:
                try:
                    observe(records.decode(raw[3]))
                except records.BadRecord:  # the pipeline dead-letters it
                    continue
    return feature_kinds.resolve(declared, counter, contracts.USER_FEATURE_PREFIX)


def _metrics(result: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(counters, {"min", "max"} of request timestamps) of a finished pipeline."""
    queried = result.metrics().query(MetricsFilter().with_namespace(transforms.NAMESPACE))
    counts: dict[str, int] = {}
    for counter in queried["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        counts[name] = counts.get(name, 0) + int(value or 0)
    timestamps: dict[str, int] = {}
    for distribution in queried["distributions"]:
        value = distribution.committed or distribution.attempted
        if value is not None and value.count:
            timestamps = {"min": int(value.min), "max": int(value.max)}
    return counts, timestamps


def _warn_unreadable(built: dict[str, Any]) -> None:
    for table, block in built["reconciliation"].items():
        for path, counts in block["per_file"].items():
            if counts["unreadable"]:
                logging.warning(
                    "%s: %s could not be read to its end (%d unreadable parts; the rows "
                    "after the break are lost, see the dead letters)",
                    table,
                    path,
                    counts["unreadable"],
                )


def _fail(output_dir: str, staging: str, built: dict[str, Any], message: str) -> None:
    """Keeps the dead letters in `<output>.failed/` and raises DataError."""
    failed = output_dir + FAILED_SUFFIX
    fs.delete_tree(failed)
    fs.move_tree(
        fs.join(staging, contracts.DEAD_LETTER_DIR), fs.join(failed, contracts.DEAD_LETTER_DIR), ""
    )
    summary = {
        "error": message,
        **{k: built[k] for k in ("reconciliation", "dead_letter_reasons", "inputs", "options")},
    }
    manifest.write_manifest(failed, summary, name="failure.json")
    raise DataError(f"{message}; dead letters in {failed}/{contracts.DEAD_LETTER_DIR}/")


def preprocess(
    config: Config,
    output_dir: str,
    *,
    beam_args: Sequence[str] = DEFAULT_BEAM_ARGS,
    overwrite: bool = False,
    chunk_bytes: int = sources.CHUNK_BYTES,
) -> dict[str, Any]:
    """Runs the preprocessing pipeline and writes the dataset directory.

    Args:
      config: the run's configuration (its `data` section drives the pipeline).
      output_dir: the dataset directory to create (a local path or a Beam file system
        URL such as gs://bucket/datasets/2024-06-01).
      beam_args: Beam pipeline options (runner and its settings).
      overwrite: replace an existing `output_dir`.
      chunk_bytes: uncompressed JSONL files are read in chunks of about this size.

    Returns:
      The manifest (also written as `output_dir/manifest.json`).

    Raises:
      DataError: missing inputs, an existing output without `overwrite`, text features
        without the `text` extra, more bad rows
        than `data.max_bad_fraction` allows, no valid request or no training example
        (the last three after writing the dead letters to `<output>.failed/`; the
        existing output is left as it was).
    """
    output_dir = fs.absolute(output_dir)
    if fs.exists(output_dir) and not overwrite:
        raise DataError(f"{output_dir} exists; pass --overwrite to replace it")
    declared, text = _declared(config)
    staging = f"{output_dir}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        inputs = _resolve_inputs(config, staging)
        limits = record_limits(config)
        user_kinds = _user_kinds(inputs, declared, limits.max_row_bytes)
        catalog_summary = catalog.write_catalog(
            inputs.catalog, config.data.format, staging, limits, declared
        )
        kinds = user_kinds.merged(catalog_summary["kinds"])
        options = examples.ExampleOptions(
            history_length=config.data.history_length,
            num_a=config.data.num_a,
            num_b=config.data.num_b,
            split=config.data.split,
            eval_from=inputs.eval_from,
            cold_item_fraction=config.data.cold_item_fraction,
        )
        pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args)))
        build_pipeline(
            pipeline,
            inputs,
            staging,
            options,
            config,
            chunk_bytes,
            kinds=kinds,
            num_items=catalog_summary["num_items"],
            text=text,
        )
        result = pipeline.run()
        result.wait_until_finish()
        counters, timestamps = _metrics(result)
        fs.delete_tree(fs.join(staging, sorted_runs.RUNS_DIR))  # runs of retried bundles
        eval_from = inputs.eval_from
        if options.split == "time" and not eval_from and config.data.eval_days and timestamps:
            eval_from = eval_from_days(timestamps["max"], config.data.eval_days)
        built = manifest.finalize(
            staging,
            config,
            inputs.patterns,
            catalog_summary,
            counters,
            timestamps,
            eval_from,
            kinds=kinds,
            text=text,
        )
        _warn_unreadable(built)
        message = manifest.bad_fraction_error(
            built, config.data.max_bad_fraction
        ) or manifest.empty_error(built)
        if message:
            _fail(output_dir, staging, built, message)
        fs.write_lines(
            fs.join(staging, contracts.CONFIG_FILE),
            [yaml.safe_dump(config.to_dict(), sort_keys=False)],
        )
        fs.delete_tree(fs.join(staging, "_logs"))
        manifest.write_manifest(staging, built)
        if fs.exists(output_dir):
            fs.delete_tree(output_dir, first=contracts.MANIFEST_FILE)
        fs.move_tree(staging, output_dir, last=contracts.MANIFEST_FILE)
        fs.delete_tree(output_dir + FAILED_SUFFIX)
    finally:
        fs.delete_tree(staging)
    return built
