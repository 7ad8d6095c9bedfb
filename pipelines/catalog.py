"""The item catalog: validated, given integer ids and cluster ids, written as JSONL.

The catalog is small next to the logs (one line per item), so it is read in one
process before the Beam pipeline; its item ids become the pipeline's side input.
"""

import json
import os
from typing import Any

from pipelines import records

CATALOG_FILE = "item_catalog.jsonl"


def _validate_item(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise records.BadRecord("bad_type", "a catalog row must be a JSON object")
    item_id = record.get("item_id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise records.BadRecord(
            "missing_id", f"item_id must be a non-empty string, got {item_id!r}"
        )
    cluster = record.get("cluster", "")
    if not isinstance(cluster, str):
        raise records.BadRecord("bad_type", f"cluster must be a string, got {cluster!r}")
    features = record.get("features") or {}
    if not isinstance(features, dict):
        raise records.BadRecord("bad_type", f"features must be an object, got {features!r}")
    tokens = {}
    for name, value in features.items():
        if isinstance(value, str):
            tokens[name] = [value]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            tokens[name] = [str(value)]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            tokens[name] = list(value)
        else:
            raise records.BadRecord(
                "bad_type", f"features.{name} must be a string, list of strings or number"
            )
    return {"item_id": item_id, "cluster": cluster or "unknown", "features": tokens}


def write_catalog(source: str, output_dir: str) -> dict[str, Any]:
    """Validates `source` (JSONL) and writes `item_catalog.jsonl` into `output_dir`.

    Each written row gets `index` (0-based, file order) and `cluster_index`.

    Returns:
      {"num_items", "num_clusters", "item_features": [...], "read", "dead_lettered",
       "dead_letters": [dead-letter rows]}.
    """
    items: dict[str, dict[str, Any]] = {}
    dead_letters = []
    read = 0
    with open(source, encoding="utf-8") as f:
        for line_number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            read += 1
            try:
                item = _validate_item(json.loads(text))
                if item["item_id"] in items:
                    raise records.BadRecord("duplicate_item", f"{item['item_id']} seen before")
            except json.JSONDecodeError as e:
                reason, detail = "bad_json", f"{e.msg} at column {e.colno}"
            except records.BadRecord as bad:
                reason, detail = bad.reason, bad.detail
            else:
                items[item["item_id"]] = item
                continue
            dead_letters.append(
                {
                    "source": source,
                    "line": line_number,
                    "reason": reason,
                    "detail": detail,
                    "record": text.rstrip("\n"),
                }
            )
    clusters = {name: i for i, name in enumerate(sorted({i["cluster"] for i in items.values()}))}
    feature_names = sorted({name for i in items.values() for name in i["features"]})
    with open(os.path.join(output_dir, CATALOG_FILE), "w") as out:
        for index, item in enumerate(items.values()):
            row = {"index": index, **item, "cluster_index": clusters[item["cluster"]]}
            out.write(json.dumps(row) + "\n")
    return {
        "num_items": len(items),
        "num_clusters": len(clusters),
        "item_features": feature_names,
        "read": read,
        "dead_lettered": len(dead_letters),
        "dead_letters": dead_letters,
    }


def read_catalog(dataset_dir: str) -> list[dict[str, Any]]:
    """The rows of a dataset's `item_catalog.jsonl`, in index order."""
    with open(os.path.join(dataset_dir, CATALOG_FILE)) as f:
        return [json.loads(line) for line in f]
