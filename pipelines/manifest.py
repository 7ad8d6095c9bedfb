"""The dataset directory's `manifest.json`: the contract between pipelines/ and trainer/.

Layout of a dataset directory (see docs/dataset.md):
  manifest.json            this file
  config.yaml              the config that made it
  train-*-of-*.tfrecord.gz, eval-*-of-*.tfrecord.gz   tf.train.Example shards
  item_catalog.jsonl       every item: index, item_id, cluster, cluster_index, features
  item_frequency.tsv       item_id <TAB> training clicks (for logQ)
  vocab/<feature>.txt      one token per line, most frequent first (train split only)
  dead_letter/*.jsonl      rejected records with source, line, reason, detail, record
"""

import datetime
import glob
import json
import os
from typing import Any

from pipelines import examples
from twotower.config import Config

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
DEAD_LETTER_DIR = "dead_letter"
VOCABULARY_DIR = "vocab"
VOCABULARY_COUNTS = "_vocabulary_counts.jsonl"
ITEM_FREQUENCY_FILE = "item_frequency.tsv"


def _write_vocabularies(staging: str) -> tuple[dict[str, int], list[str]]:
    """Splits the pipeline's vocabulary counts into one file per feature."""
    os.makedirs(os.path.join(staging, VOCABULARY_DIR), exist_ok=True)
    sizes, user_features = {}, []
    counts_path = os.path.join(staging, VOCABULARY_COUNTS)
    with open(counts_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        feature, tokens = row["feature"], row["tokens"]
        if feature == "item_id":
            with open(os.path.join(staging, ITEM_FREQUENCY_FILE), "w") as out:
                out.writelines(f"{token}\t{count}\n" for token, count in tokens)
            continue
        with open(os.path.join(staging, VOCABULARY_DIR, f"{feature}.txt"), "w") as out:
            out.writelines(f"{token}\n" for token, _ in tokens)
        sizes[feature] = len(tokens)
        if feature.startswith(examples.USER_FEATURE_PREFIX):
            user_features.append(feature[len(examples.USER_FEATURE_PREFIX) :])
    os.remove(counts_path)
    return sizes, sorted(user_features)


def _write_catalog_dead_letters(staging: str, rows: list[dict[str, Any]]) -> None:
    with open(os.path.join(staging, DEAD_LETTER_DIR, "catalog.jsonl"), "w") as f:
        f.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def _reconciliation(counters: dict[str, int], staging: str) -> dict[str, Any]:
    per_file: dict[str, dict[str, int]] = {}
    for name, value in counters.items():
        kind, _, path = name.partition(":")
        if kind in ("read", "valid", "dead_letter"):
            shown = path.replace(staging, "<generated>")
            per_file.setdefault(shown, {"read": 0, "valid": 0, "dead_letter": 0})[kind] = value
    for counts in per_file.values():
        counts["balanced"] = counts["read"] == counts["valid"] + counts["dead_letter"]
    total = {k: sum(c[k] for c in per_file.values()) for k in ("read", "valid", "dead_letter")}
    return {
        "per_file": per_file,
        "total": total,
        "balanced": all(c["balanced"] for c in per_file.values()),
    }


def finalize(
    staging: str,
    config: Config,
    requests_pattern: str,
    catalog_summary: dict[str, Any],
    counters: dict[str, int],
    eval_from: int,
) -> dict[str, Any]:
    """Writes vocabularies, catalog dead letters and `manifest.json` into `staging`."""
    vocabulary_sizes, user_features = _write_vocabularies(staging)
    _write_catalog_dead_letters(staging, catalog_summary.pop("dead_letters"))
    splits = {}
    for split in (examples.TRAIN, examples.EVAL):
        shards = sorted(glob.glob(os.path.join(staging, f"{split}-*.tfrecord.gz")))
        splits[split] = {
            "files": [os.path.basename(s) for s in shards],
            "examples": counters.get(f"examples:{split}", 0),
            "space_a": counters.get(f"space_a:{split}", 0),
            "space_b": counters.get(f"space_b:{split}", 0),
        }
    built = {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": config.data.source,
        "inputs": {
            "requests": requests_pattern.replace(staging, "<generated>"),
            "catalog": config.data.catalog or config.data.input or config.data.source,
        },
        "feature_spec": examples.feature_spec(user_features),
        "user_features": user_features,
        "item_features": catalog_summary["item_features"],
        "num_items": catalog_summary["num_items"],
        "num_clusters": catalog_summary["num_clusters"],
        "vocabulary_sizes": vocabulary_sizes,
        "splits": splits,
        "eval_from": eval_from,
        "files": {
            "item_catalog": "item_catalog.jsonl",
            "item_frequency": ITEM_FREQUENCY_FILE,
            "vocabularies": {f: f"{VOCABULARY_DIR}/{f}.txt" for f in sorted(vocabulary_sizes)},
            "dead_letter": f"{DEAD_LETTER_DIR}/",
        },
        "reconciliation": {
            "requests": _reconciliation(counters, staging),
            "catalog": {k: catalog_summary[k] for k in ("read", "dead_lettered")}
            | {"valid": catalog_summary["num_items"]},
        },
        "repairs": {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("repair:")},
        "dead_letter_reasons": {
            k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("reason:")
        },
        "options": config.to_dict()["data"],
    }
    with open(os.path.join(staging, MANIFEST_FILE), "w") as f:
        json.dump(built, f, indent=2, sort_keys=False)
    return built
