"""The dataset directory's `manifest.json`: the contract between pipelines/ and trainer/.

Layout of a dataset directory (docs/dataset.md describes every field):
  manifest.json            this file, written last: a directory without it is unfinished
  config.yaml              the config that made it
  train-*-of-*.tfrecord.gz, eval-*-of-*.tfrecord.gz   tf.train.Example shards (their
                           bytes, records and CRC32C in splits.<split>.shards)
  item_catalog.jsonl       every item: index, item_id, cluster, cluster_index, features
                           (categorical tokens), dense and text (when it has any)
  item_text/<name>.npy     item text feature <name>'s embeddings, [num_items, dim] float32
  item_frequency.tsv       item_id <TAB> training clicks (for logQ)
  item_exposure.tsv        item_id <TAB> training exposures (the exposure propensities)
  vocab/<feature>.txt      one token per line, most frequent first (train split only)
  dead_letter/*.jsonl      rejected records with source, line/row, reason, detail, record
"""

import collections
import datetime
import json
import os
from typing import Any

from common import contracts
from common.config import Config
from pipelines import catalog, feature_stats, fs, shards, sources
from pipelines.feature_kinds import FeatureKinds

VOCABULARY_COUNTS = "_vocabulary_counts.jsonl"  # the pipeline's counts, split up here
EXPOSURE_COUNTS = "_exposure_counts.jsonl"  # [item, exposures] lines, sorted here
SHARD_STATS = "_shard_stats.jsonl"  # what shards.WriteShards wrote, one line per shard
COUNTED = ("read", "valid", "dead_letter", "unreadable")


def _write_vocabulary(staging: str, feature: str, tokens: list[tuple[str, int]]) -> str:
    relative = f"{contracts.VOCABULARY_DIR}/{feature}.txt"
    fs.write_lines(fs.join(staging, relative), (f"{token}\n" for token, _ in tokens))
    return relative


def _item_feature_counts(staging: str, frequency: list[tuple[str, int]]) -> dict[str, list]:
    """Item feature tokens weighted by training clicks of the items that carry them."""
    clicks = dict(frequency)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in catalog.read_catalog(staging):
        weight = clicks.get(row["item_id"], 0)
        if weight:
            counts["cluster"][row["cluster"]] += weight
            for name, tokens in row["features"].items():
                for token in tokens:
                    counts[name][token] += weight
    return {
        f"{contracts.ITEM_FEATURE_PREFIX}{name}": sorted(c.items(), key=lambda p: (-p[1], p[0]))
        for name, c in sorted(counts.items())
    }


def limit_vocabulary(
    tokens: list[tuple[str, int]], min_count: int, max_size: int
) -> list[tuple[str, int]]:
    """The (token, count) pairs (most frequent first) a vocabulary keeps: counts of at least
    `min_count`, then the first `max_size` (0: all). The rest share the OOV buckets."""
    kept = [(token, count) for token, count in tokens if count >= min_count]
    return kept[:max_size] if max_size else kept


def _write_vocabularies(
    staging: str, num_oov_buckets: int, min_count: int = 1, max_size: int = 0
) -> tuple[dict[str, Any], list[str]]:
    """Splits the pipeline's vocabulary counts into one file per feature, each limited by
    `min_count` and `max_size` (`limit_vocabulary`).

    Returns:
      ({feature: {"file", "size", "counted", "rows", "num_oov_buckets"}}, user feature
      names). "counted": distinct tokens seen; "size": kept; "rows": the embedding table's
      rows (padding + OOV buckets + kept tokens).
    """
    counts_path = fs.join(staging, VOCABULARY_COUNTS)
    rows = [json.loads(line) for line in fs.read_lines(counts_path) if line.strip()]
    counted = {row["feature"]: [tuple(pair) for pair in row["tokens"]] for row in rows}
    frequency = counted.get("item_id", [])
    fs.write_lines(
        fs.join(staging, contracts.ITEM_FREQUENCY_FILE), (f"{item}\t{n}\n" for item, n in frequency)
    )
    counted.update(_item_feature_counts(staging, frequency))
    counted.setdefault("user_id", [])
    counted.setdefault("item_id", [])
    vocabularies = {}
    for feature, tokens in sorted(counted.items()):
        kept = limit_vocabulary(tokens, min_count, max_size)
        vocabularies[feature] = {
            "file": _write_vocabulary(staging, feature, kept),
            "size": len(kept),
            "counted": len(tokens),
            "rows": 1 + num_oov_buckets + len(kept),
            "num_oov_buckets": num_oov_buckets,
        }
    prefix = contracts.USER_FEATURE_PREFIX
    user_features = sorted(f[len(prefix) :] for f in counted if f.startswith(prefix))
    fs.delete_file(counts_path)
    return vocabularies, user_features


def _write_item_exposure(staging: str) -> dict[str, int]:
    """Writes item_exposure.tsv (item <TAB> training exposures, most exposed first) from
    the pipeline's counts; returns {"requests", "exposures", "items"} of the training
    period."""
    path = fs.join(staging, EXPOSURE_COUNTS)
    pairs = [json.loads(line) for line in fs.read_lines(path) if line.strip()]
    requests = sum(n for item, n in pairs if item == "")
    counts = sorted(((i, n) for i, n in pairs if i), key=lambda p: (-p[1], p[0]))
    fs.write_lines(
        fs.join(staging, contracts.ITEM_EXPOSURE_FILE), (f"{i}\t{n}\n" for i, n in counts)
    )
    fs.delete_file(path)
    return {"requests": requests, "exposures": sum(n for _, n in counts), "items": len(counts)}


def _per_file(counters: dict[str, int], table: str, staging: str) -> dict[str, Any]:
    per_file: dict[str, dict[str, int]] = {}
    for name, value in counters.items():
        kind, _, path = name.partition(":")
        if kind.startswith(f"{table}."):
            shown = path.replace(staging, "<generated>")
            counts = per_file.setdefault(shown, dict.fromkeys(COUNTED, 0))
            counts[kind.split(".", 1)[1]] += value
    return reconcile(per_file)


def reconcile(per_file: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Adds `balanced` (read == valid + dead_letter) per file, totals and overall.

    `unreadable` counts the parts of a file that could not be read at all (a corrupt or
    cut gzip stream, a corrupt Parquet file or row group): each is one dead letter, and
    whatever followed the break is lost.
    """
    for counts in per_file.values():
        counts.setdefault("unreadable", 0)
        counts["balanced"] = counts["read"] == counts["valid"] + counts["dead_letter"]
    total = {k: sum(c[k] for c in per_file.values()) for k in COUNTED}
    return {
        "per_file": dict(sorted(per_file.items())),
        "total": total,
        "balanced": all(c["balanced"] for c in per_file.values()),
    }


def _written_shards(staging: str) -> dict[str, dict[str, Any]]:
    """{file: {"bytes", "records", "crc32c"}} as `shards.WriteShards` wrote them; empty
    when the runner chose the shards (data.num_shards=0: they are read back instead)."""
    path = fs.join(staging, SHARD_STATS)
    if not fs.exists(path):
        return {}
    rows = [json.loads(line) for line in fs.read_lines(path) if line.strip()]
    fs.delete_file(path)
    return {row["file"]: {k: row[k] for k in ("bytes", "records", "crc32c")} for row in rows}


def _prefixed(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in sorted(counters.items()) if k.startswith(prefix)}


def finalize(
    staging: str,
    config: Config,
    inputs: dict[str, str],
    catalog_summary: dict[str, Any],
    counters: dict[str, int],
    timestamps: dict[str, int],
    eval_from: int,
    kinds: FeatureKinds = FeatureKinds(),  # noqa: B008  (frozen, shared safely)
    text: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes vocabularies and catalog dead letters into `staging`; returns the manifest.

    The caller writes it with `write_manifest` once the dataset passed its checks.

    Args:
      kinds: every feature's kind (the catalog's and the user features').
      text: `item_text.encoder_description` when there are item text features.
    """
    data = config.data
    vocabularies, user_categorical = _write_vocabularies(
        staging, data.num_oov_buckets, data.min_count, data.max_vocab_size
    )
    features = feature_stats.describe_features(
        staging, config.data, user_categorical, catalog_summary["item_features"], kinds, text
    )
    exposure = _write_item_exposure(staging)
    fs.write_lines(
        fs.join(staging, contracts.DEAD_LETTER_DIR, "catalog.jsonl"),
        (sources.dead_letter_json(r) + "\n" for r in catalog_summary["dead_letters"]),
    )
    written = _written_shards(staging)
    splits = {}
    for split in (contracts.TRAIN, contracts.EVAL):
        files = [
            os.path.basename(s) for s in fs.match(fs.join(staging, contracts.shard_pattern(split)))
        ]
        listed = [
            {"file": name, **(written.get(name) or shards.shard_stats(fs.join(staging, name)))}
            for name in files
        ]
        splits[split] = {
            "files": files,
            "shards": listed,
            "examples": sum(shard["records"] for shard in listed),
            "space_a": counters.get(f"space_a:{split}", 0),
            "space_b": counters.get(f"space_b:{split}", 0),
        }
    catalog_reconciliation = reconcile(
        {k.replace(staging, "<generated>"): v for k, v in catalog_summary["per_file"].items()}
    )
    return {
        "schema_version": contracts.DATASET_SCHEMA_VERSION,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": config.data.source,
        "inputs": {k: v.replace(staging, "<generated>") for k, v in inputs.items()},
        "feature_spec": features["feature_spec"],
        "user_features": features["user_features"],
        "item_features": catalog_summary["item_features"],
        "features": features["features"],
        **({"cold_items": features["cold_items"]} if "cold_items" in features else {}),
        "num_items": catalog_summary["num_items"],
        "num_clusters": catalog_summary["num_clusters"],
        "vocabulary_sizes": {f: v["size"] for f, v in vocabularies.items()},
        "vocabularies": vocabularies,
        "splits": splits,
        "eval_from": eval_from,
        "timestamps": timestamps,
        "requests_without_clicks": counters.get("requests_without_clicks", 0),
        "exposure": exposure,
        "files": {
            "item_catalog": contracts.CATALOG_FILE,
            "item_frequency": contracts.ITEM_FREQUENCY_FILE,
            "item_exposure": contracts.ITEM_EXPOSURE_FILE,
            "vocabularies": {f: v["file"] for f, v in vocabularies.items()},
            "dead_letter": f"{contracts.DEAD_LETTER_DIR}/",
        },
        "reconciliation": {
            "requests": _per_file(counters, "requests", staging),
            "users": _per_file(counters, "users", staging),
            "catalog": catalog_reconciliation,
        },
        "repairs": _prefixed(counters, "repair:"),
        "dead_letter_reasons": {
            "requests": _prefixed(counters, "reason:requests:"),
            "users": _prefixed(counters, "reason:users:"),
            "catalog": dict(
                sorted(
                    collections.Counter(
                        r["reason"] for r in catalog_summary["dead_letters"]
                    ).items()
                )
            ),
        },
        "options": config.to_dict()["data"],
    }


def bad_fraction_error(built: dict[str, Any], max_bad_fraction: float) -> str | None:
    """A message naming the counts when a table's dead-lettered share is too high."""
    problems = []
    for table, block in built["reconciliation"].items():
        read, bad = block["total"]["read"], block["total"]["dead_letter"]
        if read and bad / read > max_bad_fraction:
            problems.append(
                f"{table}: {bad} of {read} rows dead-lettered ({bad / read:.2%} > "
                f"data.max_bad_fraction {max_bad_fraction:.2%})"
            )
    return "; ".join(problems) or None


def empty_error(built: dict[str, Any]) -> str | None:
    """A message naming the input when no request was valid or no example is for
    training: such a dataset must not replace a good one."""
    requests = built["reconciliation"]["requests"]["total"]
    where = f"data.input={built['inputs']['requests']!r}"
    if not requests["valid"]:
        return (
            f"no valid request in {where}: {requests['read']} rows read, "
            f"{requests['dead_letter']} dead-lettered"
        )
    if not built["splits"][contracts.TRAIN]["examples"]:
        return (
            f"no training example from {where}: {requests['valid']} valid requests, "
            f"{built['requests_without_clicks']} of them without a click, "
            f"{built['splits'][contracts.EVAL]['examples']} eval examples"
        )
    return None


def write_manifest(
    staging: str, built: dict[str, Any], name: str = contracts.MANIFEST_FILE
) -> None:
    fs.write_lines(fs.join(staging, name), [json.dumps(built, indent=2) + "\n"])
