"""`twotower export`: a trained run -> `export/` for serving.

  export/query_tower/<v>/          SavedModel, `serving_default`: raw user features ->
                                   {"embedding": [batch_size, dim]}, standard ops only,
                                   warm-up requests in assets.extra/ (TF Serving's base path)
  export/items/<v>/                item_embeddings.npy, item_ids.txt, index/ (ScaNN or
                                   brute force), manifest.json
  export/retrieval/<v>/            optional: TFRS ScaNN/BruteForce SavedModel (needs a TF
                                   Serving built with ScaNN's ops)
  export/export_manifest.json      the latest version's manifest

Everything of a version is written under `export/.tmp-<v>/`, validated by reloading it
there, and only then renamed into place; the export manifest is replaced last, in one
`os.replace`, so neither TF Serving (which watches `query_tower/`) nor the retrieval
service (which watches the manifest) ever sees half a version. Versions are never
overwritten.
"""

import dataclasses
import datetime
import json
import os
import shutil
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from serving import export_version as layout
from serving.brute_force_index import BruteForceIndex
from serving.item_index import IndexConfig, build_index, load_index
from serving.query_features import batch_rows
from trainer.evaluate import eval_queries, item_embeddings
from trainer.model import TwoTowerModel
from trainer.retrieval_model import save_retrieval_model, validate_retrieval_model
from trainer.standard_ops import assert_standard_ops
from trainer.train import load_run
from trainer.warmup import WARMUP_FILE, read_warmup_requests, write_warmup_requests

QUERY_TOWER_DIR = layout.QUERY_TOWER_DIR
EXPORT_MANIFEST = layout.EXPORT_MANIFEST
RETRIEVAL_MODELS = ("none", "brute_force", "scann")
FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What `export_run` writes besides the query tower and the item embeddings.

    Attributes:
      index: the item index (`serving.item_index.IndexConfig`; "auto" by corpus size).
      retrieval_model: "none", or a TFRS "brute_force"/"scann" retrieval SavedModel.
      retrieval_k: items the retrieval SavedModel returns per query.
      warmup_requests: TF Serving warm-up records (1..1000).
      model_name: TF Serving's model name, written into the warm-up requests.
      validation_users: eval users embedded by the trained and the reloaded model.
      tolerance: largest allowed |trained - reloaded| difference (embeddings, index
        scores), relative to the compared values' magnitude when that is above 1.
    """

    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    retrieval_model: str = "none"
    retrieval_k: int = 100
    warmup_requests: int = 8
    model_name: str = "query_tower"
    validation_users: int = 64
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        if self.retrieval_model not in RETRIEVAL_MODELS:
            raise ValueError(
                f"retrieval_model must be one of {RETRIEVAL_MODELS}, got {self.retrieval_model!r}"
            )


def _versions(base: str) -> list[int]:
    if not os.path.isdir(base):
        return []
    return sorted(int(name) for name in os.listdir(base) if name.isdigit())


def query_signature(model: TwoTowerModel) -> tf.types.experimental.ConcreteFunction:
    """The `serving_default` function: a dict of raw string features -> embedding."""
    specs = {"user_id": tf.TensorSpec([None], tf.string, name="user_id")}
    for name in model.query_tower.feature_names[1:]:
        specs[name] = tf.TensorSpec([None, None], tf.string, name=name)

    @tf.function(input_signature=[specs])
    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {"embedding": model.query_embeddings(features)}

    return serve.get_concrete_function()


def _validate(
    staging: str,
    model: TwoTowerModel,
    embeddings: np.ndarray,
    features: Mapping[str, np.ndarray],
    options: ExportOptions,
) -> dict[str, Any]:
    """Reloads the staged version and checks it against the trained model.

    Raises:
      ValueError: a reloaded score differs from the trained model's.
    """
    tower_dir = os.path.join(staging, layout.QUERY_TOWER_DIR)
    reloaded = tf.saved_model.load(tower_dir).signatures["serving_default"]
    users = batch_rows(features, slice(0, options.validation_users))
    as_tensors = {name: tf.constant(v, dtype=tf.string) for name, v in users.items()}
    trained = model.query_embeddings(as_tensors).numpy()
    served = reloaded(**as_tensors)["embedding"].numpy()
    query_diff = float(np.max(np.abs(trained - served)))
    warmup = [
        reloaded(**{n: tf.make_ndarray(t) for n, t in r.inputs.items()})
        for r in read_warmup_requests(tower_dir)
    ]
    items_dir = os.path.join(staging, layout.ITEMS_DIR)
    item_diff = float(
        np.max(np.abs(np.load(os.path.join(items_dir, layout.ITEM_EMBEDDINGS)) - embeddings))
    )
    index = load_index(os.path.join(items_dir, layout.INDEX_DIR))
    k = min(10, len(embeddings))
    found, scores = index.search(served, k)
    exact, _ = BruteForceIndex(embeddings).search(served, k)
    recall = float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact, strict=True)]))
    # Reordering rescored the candidates exactly, so their scores are true inner products.
    true_scores = np.einsum("bd,bkd->bk", served, embeddings[np.maximum(found, 0)])
    index_diff = float(np.max(np.abs(np.where(found >= 0, scores - true_scores, 0.0))))
    result = {
        "users": len(trained),
        **validate_retrieval_model(staging, as_tensors, exact),
        "query_embedding_max_abs_diff": query_diff,
        "item_embedding_max_abs_diff": item_diff,
        "warmup_requests_replayed": len(warmup),
        "index_k": k,
        "index_recall_vs_brute_force": recall,
        "index_score_max_abs_diff": index_diff,
        "tolerance": options.tolerance,
    }
    # The tolerance is relative to the size of what is compared (float32 rounding).
    scales = {
        "query_embedding_max_abs_diff": np.abs(trained).max(),
        "item_embedding_max_abs_diff": np.abs(embeddings).max(),
        "index_score_max_abs_diff": np.abs(true_scores).max(),
    }
    failed = [
        name
        for name, scale in scales.items()
        if result[name] > options.tolerance * max(1.0, float(scale))
    ]
    result["passed"] = not failed
    if failed:
        raise ValueError(
            f"{staging}: reloaded export differs from the trained model: "
            + ", ".join(f"{n}={result[n]:.3g}" for n in failed)
        )
    return result


def _next_version(export_dir: str, version: int) -> int:
    bases = [layout.QUERY_TOWER_DIR, layout.ITEMS_DIR, layout.RETRIEVAL_DIR]
    taken = [v for base in bases for v in _versions(os.path.join(export_dir, base))]
    version = version or (max(taken, default=0) + 1)
    for base in bases:
        final = os.path.join(export_dir, base, str(version))
        if os.path.exists(final):
            raise FileExistsError(f"{final} exists; versions are never overwritten")
    return version


def write_export(
    export_dir: str,
    model: TwoTowerModel,
    item_ids: list[str],
    embeddings: np.ndarray,
    query_features: Mapping[str, np.ndarray],
    *,
    version: int = 0,
    options: ExportOptions | None = None,
    similarity: str = "dot",
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes, validates and publishes one export version.

    Args:
      export_dir: the export folder (created).
      model: has `query_tower` and `query_embeddings(features)`.
      item_ids: the corpus, `[num_items]`.
      embeddings: `[num_items, dim]` item embeddings in `item_ids` order.
      query_features: real users' signature inputs (warm-up requests and validation).
      version: the version to write; 0 means one above the newest.
      options: see `ExportOptions`.
      similarity: the model's similarity, recorded for readers.
      source: where the model came from (run directory, ...), recorded.

    Returns:
      The version's manifest (also `export_manifest.json`).

    Raises:
      FileExistsError: `version` already exists.
      ValueError: the SavedModel holds non-standard ops, or validation failed.
    """
    options = options or ExportOptions()
    version = _next_version(export_dir, version)
    staging = os.path.join(export_dir, f".tmp-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        manifest = _stage(staging, model, item_ids, embeddings, query_features, options)
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": version,
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "source": dict(source or {}),
            "similarity": similarity,
            **manifest,
        }
        _publish(export_dir, staging, version, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _stage(
    staging: str,
    model: TwoTowerModel,
    item_ids: list[str],
    embeddings: np.ndarray,
    query_features: Mapping[str, np.ndarray],
    options: ExportOptions,
) -> dict[str, Any]:
    """Writes the version under `staging` and validates it; returns the manifest body."""
    tower_dir = os.path.join(staging, layout.QUERY_TOWER_DIR)
    module = tf.Module()
    module.query_tower = model.query_tower  # tracks only the query side's variables
    signature = query_signature(model)
    tf.saved_model.save(module, tower_dir, signatures={"serving_default": signature})
    ops = assert_standard_ops(tower_dir)
    inputs = signature.structured_input_signature[0][0]
    features = {name: np.asarray(query_features[name]) for name in inputs}
    warmup = write_warmup_requests(
        tower_dir, features, options.model_name, num_requests=options.warmup_requests
    )

    items_dir = os.path.join(staging, layout.ITEMS_DIR)
    os.makedirs(items_dir)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    np.save(os.path.join(items_dir, layout.ITEM_EMBEDDINGS), embeddings)
    with open(os.path.join(items_dir, layout.ITEM_IDS), "w") as f:
        f.writelines(f"{item}\n" for item in item_ids)
    start = time.perf_counter()
    index = build_index(embeddings, options.index)
    build_seconds = time.perf_counter() - start
    index.save(os.path.join(items_dir, layout.INDEX_DIR))

    retrieval = None
    if options.retrieval_model != "none":
        retrieval_dir = os.path.join(staging, layout.RETRIEVAL_DIR)
        retrieval = save_retrieval_model(
            retrieval_dir, model, item_ids, embeddings, options, query_signature(model)
        )

    validation = _validate(staging, model, embeddings, features, options)
    return {
        "query_tower": {
            "model_name": options.model_name,
            "signature": "serving_default",
            "inputs": {
                name: {"dtype": "string", "shape": spec.shape.as_list()}
                for name, spec in inputs.items()
            },
            "output": {"embedding": [None, int(embeddings.shape[1])]},
            "ops": ops,
            "warmup": {"file": WARMUP_FILE, **warmup},
        },
        "items": {"count": len(item_ids), "dim": int(embeddings.shape[1])},
        "index": {
            "kind": index.kind,
            "config": index.config.get_config(),
            "build_seconds": round(build_seconds, 3),
        },
        "retrieval_model": retrieval,
        "validation": validation,
    }


def _publish(export_dir: str, staging: str, version: int, manifest: dict[str, Any]) -> None:
    """Renames the staged parts into place, query tower last, then swaps the manifest."""
    items = f"{layout.ITEMS_DIR}/{version}"
    manifest["query_tower"]["path"] = f"{layout.QUERY_TOWER_DIR}/{version}"
    manifest["items"]["embeddings"] = f"{items}/{layout.ITEM_EMBEDDINGS}"
    manifest["items"]["ids"] = f"{items}/{layout.ITEM_IDS}"
    manifest["index"]["path"] = f"{items}/{layout.INDEX_DIR}"
    if manifest["retrieval_model"]:
        manifest["retrieval_model"]["path"] = f"{layout.RETRIEVAL_DIR}/{version}"
    towers = os.path.join(export_dir, layout.QUERY_TOWER_DIR)
    manifest["query_tower"]["versions"] = sorted({*_versions(towers), version})
    manifest["query_tower"]["latest"] = version
    with open(os.path.join(staging, layout.ITEMS_DIR, layout.VERSION_MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    for part in (layout.ITEMS_DIR, layout.RETRIEVAL_DIR, layout.QUERY_TOWER_DIR):
        if os.path.exists(os.path.join(staging, part)):
            os.makedirs(os.path.join(export_dir, part), exist_ok=True)
            os.rename(os.path.join(staging, part), os.path.join(export_dir, part, str(version)))
    temporary = os.path.join(export_dir, f".{EXPORT_MANIFEST}.tmp")
    with open(temporary, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(temporary, os.path.join(export_dir, EXPORT_MANIFEST))


def export_run(
    run_dir: str, version: int = 0, *, options: ExportOptions | None = None
) -> dict[str, Any]:
    """Exports the query tower, item embeddings and item index of a trained run.

    Args:
      run_dir: a finished `twotower train` run.
      version: the version folder to write; 0 means one above the newest.
      options: index, warm-up, optional retrieval model (`ExportOptions`).

    Returns:
      The export manifest (also written to `export/export_manifest.json`).

    Raises:
      FileExistsError: `version` already exists.
      ValueError: non-standard ops in the query tower, or the reloaded export differs.
    """
    config, dataset, model = load_run(run_dir)
    options = options or ExportOptions()
    if config.model.similarity == "cosine" and not options.index.spherical:
        options = dataclasses.replace(
            options, index=dataclasses.replace(options.index, spherical=True)
        )
    queries = eval_queries(dataset)
    if not queries.users:
        raise ValueError(f"{run_dir}: the dataset has no eval users for warm-up requests")
    return write_export(
        os.path.join(run_dir, "export"),
        model,
        list(dataset.item_ids),
        item_embeddings(model, dataset.item_ids),
        queries.features,
        version=version,
        options=options,
        similarity=config.model.similarity,
        source={"run_dir": os.path.abspath(run_dir)},
    )
