"""The item catalog: validated, given integer ids and cluster ids, written as JSONL.

The catalog is small next to the logs (one row per item), so it is read in one process
before the Beam pipeline (any of the input formats, see `sources`); its item ids become
the pipeline's side input, which therefore has to fit in a worker's memory (ten million
ids take about 1 GB). Being read whole, it is also where item feature kinds are
inferred from every row (`feature_kinds`) before any row is checked against them.
"""

import functools
import json
from collections.abc import Iterable
from typing import Any

from common.contracts import CATALOG_FILE, CATEGORICAL, ITEM_FEATURE_PREFIX, TEXT
from pipelines import feature_kinds, fs, records, sources
from pipelines.feature_kinds import FeatureKinds


def validate_item(
    record: Any,
    limits: records.RecordLimits = records.DEFAULT_LIMITS,
    kinds: FeatureKinds = FeatureKinds(),  # noqa: B008  (frozen, shared safely)
) -> dict[str, Any]:
    """{"item_id", "cluster", "features": {name: [tokens]}} of one catalog row, plus
    "dense": {name: [floats]} (numeric and vector features) and "text": {name: str}
    when the row has any (`kinds` says which feature is which; missing values are left
    out, see `records.feature_values`).

    A missing or empty cluster becomes "unknown".

    Raises:
      BadRecord: a missing id or a field of the wrong type or size, a feature value that
        does not fit its kind.
    """
    if not isinstance(record, dict):
        raise records.BadRecord("bad_type", "a catalog row must be an object")
    item_id = records.require_id(record, "item_id", limits)
    cluster = record.get("cluster") or ""
    if not isinstance(cluster, str):
        raise records.BadRecord(
            "bad_type", f"cluster must be a string, got {records.shown(cluster)}"
        )
    records.check_texts([cluster], "cluster", limits.max_id_bytes)
    values = records.feature_values(
        record.get("features"), "features", limits, kinds, ITEM_FEATURE_PREFIX
    )
    split: dict[str, dict[str, Any]] = {"features": {}, "dense": {}, "text": {}}
    for name, value in values.items():
        kind = kinds.of(ITEM_FEATURE_PREFIX, name).kind
        split["features" if kind == CATEGORICAL else "text" if kind == TEXT else "dense"][name] = (
            value
        )
    item = {"item_id": item_id, "cluster": cluster or "unknown", "features": split["features"]}
    item.update((field, split[field]) for field in ("dense", "text") if split[field])
    return item


def _decoded(raw: sources.RawRecord) -> tuple[Any, Exception | None]:
    """(the row's JSON value, None) or (None, the error that stops it being read)."""
    try:
        if raw[4]:
            raise records.BadRecord(*raw[4])
        return records.decode(raw[3]), None
    except Exception as error:  # one bad row never stops the run
        return None, error


def write_catalog(
    paths: Iterable[str],
    fmt: str,
    output_dir: str,
    limits: records.RecordLimits = records.DEFAULT_LIMITS,
    declared: FeatureKinds = FeatureKinds(),  # noqa: B008  (frozen, shared safely)
) -> dict[str, Any]:
    """Validates the catalog files and writes `item_catalog.jsonl` into `output_dir`.

    Each written row gets `index` (0-based, input order) and `cluster_index` (clusters
    sorted by name). A repeated item id is a bad record (`duplicate_item`); the first
    row wins. Any exception while checking a row dead-letters it (`records.failure`).
    Item feature kinds are `declared`, or else inferred over every row read.

    Args:
      paths: catalog files (see `sources.expand_patterns`).
      fmt: data.format ("auto" decides per file by extension).
      output_dir: the staging dataset directory (any Beam file system).
      limits: row, id and token sizes.
      declared: the kinds the config declares (`feature_kinds.declared_kinds`).

    Returns:
      {"num_items", "num_clusters", "item_features": [categorical names], "kinds":
       FeatureKinds of the item features, "read", "dead_lettered",
       "per_file": {path: {"read", "valid", "dead_letter", "unreadable"}},
       "dead_letters": [rows]}.
    """
    rows = [(raw, *_decoded(raw)) for raw in sources.iter_records(paths, fmt, limits.max_row_bytes)]
    counter = feature_kinds.KindCounter()
    for _, decoded, error in rows:
        if error is None:
            counter.observe_item(decoded)
    kinds = feature_kinds.resolve(declared, counter, ITEM_FEATURE_PREFIX)
    # Only all-categorical catalogs take the plain call (tests replace validate_item).
    check = (
        functools.partial(validate_item, kinds=kinds)
        if kinds.has_non_categorical(ITEM_FEATURE_PREFIX)
        else validate_item
    )
    items: dict[str, dict[str, Any]] = {}
    dead_letters = []
    per_file: dict[str, dict[str, int]] = {}
    for raw, decoded, read_error in rows:
        counts = per_file.setdefault(
            raw[0], {"read": 0, "valid": 0, "dead_letter": 0, "unreadable": 0}
        )
        counts["read"] += 1
        try:
            if read_error:
                raise read_error
            item = check(decoded, limits)
            if item["item_id"] in items:
                raise records.BadRecord("duplicate_item", f"{item['item_id']} seen before")
        except Exception as error:  # one bad row never stops the run
            reason, detail = records.failure(error)
            counts["dead_letter"] += 1
            counts["unreadable"] += reason in sources.UNREADABLE
            dead_letters.append(sources.dead_letter_row(raw, reason, detail))
            continue
        counts["valid"] += 1
        items[item["item_id"]] = item
    clusters = {name: i for i, name in enumerate(sorted({i["cluster"] for i in items.values()}))}
    feature_names = sorted({name for i in items.values() for name in i["features"]})
    lines = (
        json.dumps({"index": index, **item, "cluster_index": clusters[item["cluster"]]}) + "\n"
        for index, item in enumerate(items.values())
    )
    fs.write_lines(fs.join(output_dir, CATALOG_FILE), lines)
    return {
        "num_items": len(items),
        "num_clusters": len(clusters),
        "item_features": feature_names,
        "kinds": kinds,
        "read": sum(c["read"] for c in per_file.values()),
        "dead_lettered": len(dead_letters),
        "per_file": per_file,
        "dead_letters": dead_letters,
    }


def read_catalog(dataset_dir: str) -> list[dict[str, Any]]:
    """The rows of a dataset's `item_catalog.jsonl`, in index order."""
    return [json.loads(line) for line in fs.read_lines(fs.join(dataset_dir, CATALOG_FILE))]
