"""`twotower preprocess`: request logs -> a dataset directory the trainer reads.

The dataset is built in a sibling temporary folder and renamed into place at the end,
so a crashed run never leaves a directory that looks complete.
"""

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import catalog, examples, manifest, movielens, transforms
from twotower.config import Config, save_config

DEFAULT_BEAM_ARGS = (
    "--runner=DirectRunner",
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
)


class DataError(ValueError):
    """The input data cannot be turned into a dataset; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Inputs:
    requests: str  # a file pattern
    catalog: str
    eval_from: int


def _resolve_inputs(config: Config, staging: str) -> Inputs:
    data = config.data
    if data.source == "movielens-100k":
        files = movielens.write_movielens_logs(
            movielens.locate_movielens_100k(), os.path.join(staging, "_logs"), data.min_click_rating
        )
        return Inputs(files["requests"], files["catalog"], data.eval_from)
    if data.source == "simulator":
        world_path = os.path.join(data.input, "world.json")
        if not os.path.exists(world_path):
            raise DataError(f"data.input={data.input!r}: no world.json; run `twotower simulate`")
        with open(world_path) as f:
            eval_from = data.eval_from or int(json.load(f)["eval_from"])
        return Inputs(
            os.path.join(data.input, "requests.jsonl"),
            os.path.join(data.input, "items.jsonl"),
            eval_from,
        )
    if not data.input or not data.catalog:
        raise DataError("data.source=logs needs data.input (request logs) and data.catalog")
    if not os.path.exists(data.catalog):
        raise DataError(f"data.catalog={data.catalog!r}: no such file")
    return Inputs(data.input, data.catalog, data.eval_from)


def _build_pipeline(
    pipeline: beam.Pipeline,
    inputs: Inputs,
    staging: str,
    options: examples.ExampleOptions,
    num_shards: int,
) -> None:
    catalog_ids = (
        pipeline
        | "ReadCatalog" >> beam.io.ReadFromText(os.path.join(staging, catalog.CATALOG_FILE))
        | "CatalogIds" >> beam.Map(lambda line: (json.loads(line)["item_id"], 1))
    )
    parsed = (
        pipeline
        | "ReadRequests" >> transforms.ReadLinesWithPosition(inputs.requests)
        | "Validate"
        >> beam.ParDo(transforms.ParseRequestFn(), beam.pvalue.AsDict(catalog_ids)).with_outputs(
            transforms.DEAD_LETTER, main="requests"
        )
    )
    _ = (
        parsed[transforms.DEAD_LETTER]
        | "DeadLetterJson" >> beam.Map(lambda row: json.dumps(row, sort_keys=True))
        | "WriteDeadLetter"
        >> beam.io.WriteToText(
            os.path.join(staging, manifest.DEAD_LETTER_DIR, "requests"), file_name_suffix=".jsonl"
        )
    )
    splits = (
        parsed["requests"]
        | "KeyByUser" >> beam.Map(lambda request: (request["user_id"], request))
        | "GroupByUser" >> beam.GroupByKey()
        | "Examples"
        >> beam.ParDo(transforms.UserExamplesFn(options)).with_outputs(
            examples.TRAIN, examples.EVAL
        )
    )
    for split in (examples.TRAIN, examples.EVAL):
        _ = (
            splits[split]
            | f"Serialize{split.title()}" >> beam.Map(examples.to_tf_example)
            | f"Write{split.title()}"
            >> beam.io.WriteToTFRecord(
                os.path.join(staging, split),
                file_name_suffix=".tfrecord.gz",
                num_shards=num_shards,
            )
        )
    _ = (
        splits[examples.TRAIN]
        | "Vocabularies" >> transforms.ComputeVocabularies()
        | "WriteVocabularies"
        >> beam.io.WriteToText(
            os.path.join(staging, manifest.VOCABULARY_COUNTS),
            num_shards=1,
            shard_name_template="",
        )
    )


def _counters(result: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(transforms.NAMESPACE))[
        "counters"
    ]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        counts[name] = counts.get(name, 0) + int(value)
    return counts


def preprocess(
    config: Config,
    output_dir: str,
    *,
    beam_args: Sequence[str] = DEFAULT_BEAM_ARGS,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Runs the preprocessing pipeline and writes the dataset directory.

    Args:
      config: the run's configuration (its `data` section drives the pipeline).
      output_dir: the dataset directory to create.
      beam_args: Beam pipeline options (runner and its settings).
      overwrite: replace an existing `output_dir`.

    Returns:
      The manifest (also written as `output_dir/manifest.json`).

    Raises:
      DataError: missing inputs, or an existing output without `overwrite`.
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise DataError(f"{output_dir} exists; pass --overwrite to replace it")
    staging = f"{output_dir}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(os.path.join(staging, manifest.DEAD_LETTER_DIR))
    try:
        inputs = _resolve_inputs(config, staging)
        catalog_summary = catalog.write_catalog(inputs.catalog, staging)
        options = examples.ExampleOptions(
            history_length=config.data.history_length,
            num_a=config.data.num_a,
            num_b=config.data.num_b,
            split=config.data.split,
            eval_from=inputs.eval_from,
        )
        pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args)))
        _build_pipeline(pipeline, inputs, staging, options, config.data.num_shards)
        result = pipeline.run()
        result.wait_until_finish()
        built = manifest.finalize(
            staging, config, inputs.requests, catalog_summary, _counters(result), inputs.eval_from
        )
        save_config(config, staging)
        shutil.rmtree(os.path.join(staging, "_logs"), ignore_errors=True)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.rename(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return built
