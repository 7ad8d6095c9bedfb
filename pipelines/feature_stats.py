"""Statistics of the numeric and vector features, and the manifest's `features` block.

A numeric feature is described by the count and share of missing values and by the
mean and standard deviation of its *transformed* value (log1p when it is in
`data.log_features`), from which the trainer standardises it: user features over the
**training split's** examples only (so nothing about eval leaks into the model), item
features over the catalog rows. The standard deviation is the population one; 1.0 when
it is 0 or undefined (no value), and the mean is then 0.0 when undefined. With
`data.numeric_buckets` = N > 1 there are also up to N - 1 quantile boundaries of the
transformed value (Beam's `ApproximateQuantiles`, exact on small inputs; repeated values
collapse, so fewer boundaries come out), [] otherwise. A vector feature is described by
its count and missing values only.
"""

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from common.contracts import (
    CATEGORICAL,
    ITEM_FEATURE_PREFIX,
    ITEM_TEXT_DIR,
    NUMERIC,
    TEXT,
    USER_FEATURE_PREFIX,
    VECTOR,
)
from pipelines import catalog, examples, fs
from pipelines.feature_kinds import DENSE, FeatureKind, FeatureKinds

USER_STATS = "_feature_stats.jsonl"  # ComputeUserStats' lines in the staging folder
Moments = tuple[int, float, float, int]  # (count, mean, sum of squared deviations, missing)


class MomentsFn(beam.CombineFn):
    """Count, missing, mean and std of floats (None: missing), merged with Chan's
    parallel form of Welford's algorithm so partial results combine stably."""

    def create_accumulator(self) -> Moments:
        return 0, 0.0, 0.0, 0

    def add_input(self, accumulator: Moments, value: float | None) -> Moments:
        count, mean, m2, missing = accumulator
        if value is None:
            return count, mean, m2, missing + 1
        count += 1
        delta = value - mean
        mean += delta / count
        return count, mean, m2 + delta * (value - mean), missing

    def merge_accumulators(self, accumulators: Iterable[Moments]) -> Moments:
        count, mean, m2, missing = self.create_accumulator()
        for other_count, other_mean, other_m2, other_missing in accumulators:
            missing += other_missing
            if not other_count:
                continue
            total = count + other_count
            delta = other_mean - mean
            mean += delta * other_count / total
            m2 += other_m2 + delta * delta * count * other_count / total
            count = total
        return count, mean, m2, missing

    def extract_output(self, accumulator: Moments) -> dict[str, Any]:
        count, mean, m2, missing = accumulator
        std = math.sqrt(m2 / count) if count else 0.0
        return {
            "count": count,
            "missing": missing,
            "mean": mean if count else 0.0,
            "std": std if std > 0 else 1.0,
        }


def transformed(value: list[float], kind: FeatureKind) -> float:
    """The value a numeric feature's statistics describe: log1p when `kind.log`."""
    return math.log1p(value[0]) if kind.log else value[0]


def _user_values(
    example: dict[str, Any], dense: dict[str, FeatureKind]
) -> Iterator[tuple[str, float | None]]:
    for qualified, kind in dense.items():
        value = example.get(qualified)
        if value is None:
            yield qualified, None
        else:
            yield qualified, transformed(value, kind) if kind.kind == NUMERIC else 0.0


def _boundaries(quantiles: list[float]) -> list[float]:
    return sorted({float(q) for q in quantiles[1:-1]})


def _boundaries_json(name: str, quantiles: list[float]) -> str:
    return json.dumps({"feature": name, "boundaries": _boundaries(quantiles)})


@beam.ptransform_fn
def ComputeUserStats(  # noqa: N802
    train: beam.PCollection, dense: dict[str, FeatureKind], num_buckets: int
) -> beam.PCollection:
    """JSON lines {"feature", "count", "missing", "mean", "std"} per numeric or vector
    user feature, and {"feature", "boundaries"} per numeric one when `num_buckets` > 1.

    Args:
      train: the training split's example dicts.
      dense: "user.<name>" -> kind, of the numeric and vector user features.
      num_buckets: data.numeric_buckets.
    """
    values = train | "DenseValues" >> beam.FlatMap(_user_values, dense)
    moments = (
        values
        | "Moments" >> beam.CombinePerKey(MomentsFn())
        | "MomentsJson" >> beam.MapTuple(lambda name, m: json.dumps({"feature": name, **m}))
    )
    numeric = {name for name, kind in dense.items() if kind.kind == NUMERIC}
    if num_buckets < 2 or not numeric:
        return moments
    boundaries = (
        values
        | "Present" >> beam.Filter(lambda pair: pair[1] is not None and pair[0] in numeric)
        | "Quantiles" >> beam.ApproximateQuantiles.PerKey(num_buckets + 1)
        | "BoundariesJson" >> beam.MapTuple(_boundaries_json)
    )
    return (moments, boundaries) | "FlattenStats" >> beam.Flatten()


def read_user_stats(lines: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{"user.<name>": merged statistics} of `ComputeUserStats`' lines."""
    stats: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.strip():
            row = json.loads(line)
            stats.setdefault(row.pop("feature"), {}).update(row)
    return stats


def _local_stats(values: list[float | None], numeric: bool, num_buckets: int) -> dict[str, Any]:
    """The statistics `ComputeUserStats` gives, computed in this process."""
    moments_fn = MomentsFn()
    accumulator = moments_fn.create_accumulator()
    for value in values:
        accumulator = moments_fn.add_input(accumulator, value)
    stats = moments_fn.extract_output(accumulator)
    if numeric and num_buckets > 1:
        quantiles_fn = ApproximateQuantilesCombineFn.create(num_buckets + 1)
        state = quantiles_fn.create_accumulator()
        for value in values:
            if value is not None:
                state = quantiles_fn.add_input(state, value)
        stats["boundaries"] = _boundaries(quantiles_fn.extract_output(state))
    return stats


def entry(kind: FeatureKind, stats: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest `features` entry of a numeric or vector feature (contracts.py)."""
    stats = stats or {}
    counted = {"count": stats.get("count", 0), "missing": stats.get("missing", 0)}
    if kind.kind == VECTOR:
        return {"kind": VECTOR, "dim": kind.dim, **counted}
    return {
        "kind": NUMERIC,
        "dim": 1,
        "log": kind.log,
        "mean": stats.get("mean", 0.0),
        "std": stats.get("std", 1.0),
        **counted,
        "boundaries": stats.get("boundaries", []),
    }


def text_file(name: str) -> str:
    """Where item text feature `name`'s embeddings go, relative to the dataset."""
    return f"{ITEM_TEXT_DIR}/{name}.npy"


def item_entries(
    rows: list[dict[str, Any]],
    kinds: FeatureKinds,
    num_buckets: int,
    text: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The `features` entries of the numeric, vector and text item features.

    Args:
      rows: the catalog rows (`catalog.read_catalog`).
      kinds: the item features' kinds.
      num_buckets: data.numeric_buckets.
      text: {"encoder", "dim"} of the text encoder when there are text features.
    """
    entries = {}
    prefix = ITEM_FEATURE_PREFIX
    for name, kind in kinds.named(prefix, NUMERIC, VECTOR).items():
        values = [row.get("dense", {}).get(name) for row in rows]
        if kind.kind == NUMERIC:
            values = [None if v is None else transformed(v, kind) for v in values]
        else:
            values = [None if v is None else 0.0 for v in values]
        stats = _local_stats(values, kind.kind == NUMERIC, num_buckets)
        entries[prefix + name] = entry(kind, stats)
    for name in kinds.named(prefix, TEXT):
        count = sum(1 for row in rows if name in row.get("text", {}))
        entries[prefix + name] = {
            "kind": TEXT,
            "dim": (text or {}).get("dim", 0),
            "encoder": (text or {}).get("encoder", ""),
            "file": text_file(name),
            "count": count,
            "missing": len(rows) - count,
        }
    return entries


def feature_entries(
    user_categorical: Iterable[str],
    item_categorical: Iterable[str],
    kinds: FeatureKinds,
    user_stats: dict[str, dict[str, Any]],
    items: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """The manifest's `features`: one entry per user and item feature, by qualified
    name, sorted (see common/contracts.py).

    Args:
      user_categorical: the categorical user features (those with a vocabulary).
      item_categorical: the catalog's categorical features.
      kinds: every feature's kind.
      user_stats: `read_user_stats` of the training split.
      items: `item_entries`.
    """
    features: dict[str, dict[str, Any]] = {}
    for name in user_categorical:
        features[USER_FEATURE_PREFIX + name] = {"kind": CATEGORICAL}
    for name, kind in kinds.named(USER_FEATURE_PREFIX, NUMERIC, VECTOR).items():
        qualified = USER_FEATURE_PREFIX + name
        features[qualified] = entry(kind, user_stats.get(qualified))
    for name in item_categorical:
        features[ITEM_FEATURE_PREFIX + name] = {"kind": CATEGORICAL}
    features.update(items)
    return dict(sorted(features.items()))


def _user_stats(staging: str) -> dict[str, dict[str, Any]]:
    """`read_user_stats` of the pipeline's file, which is then deleted."""
    path = fs.join(staging, USER_STATS)
    if not fs.exists(path):
        return {}
    stats = read_user_stats(fs.read_lines(path))
    fs.delete_file(path)
    return stats


def describe_features(
    staging: str,
    data: Any,
    user_categorical: list[str],
    item_categorical: list[str],
    kinds: FeatureKinds,
    text: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest's "feature_spec", "user_features" (every user feature's name) and
    "features", and "cold_items" when `data.cold_item_fraction` is set.

    Args:
      staging: the staging dataset (its catalog and the pipeline's statistics file).
      data: the `data` settings.
      user_categorical: the categorical user features with a vocabulary.
      item_categorical: the catalog's categorical features.
      kinds: every feature's kind.
      text: `item_text.encoder_description`, when there are text features.
    """
    user_dense = kinds.named(USER_FEATURE_PREFIX, *DENSE)
    user_features = sorted(set(user_categorical) | set(user_dense))
    needs_rows = kinds.has_non_categorical(ITEM_FEATURE_PREFIX) or data.cold_item_fraction > 0
    rows = catalog.read_catalog(staging) if needs_rows else []
    items = item_entries(rows, kinds, data.numeric_buckets, text)
    built = {
        "feature_spec": examples.feature_spec(
            user_features, {name: kind.dim for name, kind in user_dense.items()}
        ),
        "user_features": user_features,
        "features": feature_entries(
            user_categorical, item_categorical, kinds, _user_stats(staging), items
        ),
    }
    if data.cold_item_fraction > 0:
        cold = sum(examples.is_cold(row["item_id"], data.cold_item_fraction) for row in rows)
        built["cold_items"] = {"fraction": data.cold_item_fraction, "count": cold}
    return built
