"""`twotower export`: a trained run -> `export/` for serving.

  export/query_tower/<v>/          SavedModel, `serving_default`: raw user features ->
                                   {"embedding": [batch_size, dim]} (and "intentions":
                                   [batch_size, H, dim] for Multi-CLRec), standard ops only,
                                   warm-up requests in assets.extra/ (TF Serving's base path)
  export/items/<v>/                item_embeddings.npy, item_ids.txt, index/ (ScaNN or
                                   brute force), manifest.json
  export/retrieval/<v>/            optional: TFRS ScaNN/BruteForce SavedModel (needs a TF
                                   Serving built with ScaNN's ops)
  export/export_manifest.json      the latest version's manifest

Everything of a version is written under `export/.tmp-<v>-<pid>/`, validated by
reloading it there, and only then published (`trainer.publish`: fsynced, renamed into
place query tower last, the export manifest replaced last, rolled back on any failure,
under an exclusive lock), so neither TF Serving (which watches `query_tower/`) nor the
retrieval service (which watches the manifest) ever sees half a version. Versions are
never overwritten. A model whose embeddings or index results are not finite (a diverged
training) is refused: `NonFiniteExport`, nothing published.
"""

import datetime
import os
import shutil
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from common import contracts
from trainer.evaluate import eval_queries, item_embeddings, top_k
from trainer.export_options import ExportOptions
from trainer.model import TwoTowerModel
from trainer.publish import (
    export_lock,
    next_version,
    publish,
    remove_stale_staging,
    staging_dir,
    versions,
)
from trainer.retrieval_model import save_retrieval_model, validate_retrieval_model
from trainer.standard_ops import assert_standard_ops
from trainer.train import load_run
from trainer.warmup import read_warmup_requests, write_warmup_requests

FORMAT_VERSION = 2


class NonFiniteExport(ValueError):
    """Embeddings or index results with NaN or infinite values: the model diverged."""


def check_finite(name: str, values: np.ndarray) -> None:
    """Raises NonFiniteExport naming `name` and how many values (and which rows) are not
    finite."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) if values.ndim else []
        raise NonFiniteExport(
            f"{name}: {int(bad.sum())} of {values.size} values are NaN or infinite (rows "
            f"{list(rows[:5])}{'...' if len(rows) > 5 else ''}); the model diverged, nothing "
            "was published"
        )


class ItemIndex(Protocol):
    """An item index as export uses it (`serving.item_index.ItemIndex` is one)."""

    kind: str

    def save(self, directory: str) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


class ItemIndexBuilder(Protocol):
    """Builds and reloads the item index (`serving.index_io.IndexBuilder` is one).

    The index format belongs to the serving side, which reads it; the export only
    writes it, so the caller hands the builder in and this package never imports serving.
    """

    def build(self, embeddings: np.ndarray, *, spherical: bool = False) -> ItemIndex: ...

    def load(self, directory: str) -> ItemIndex: ...


def query_signature(model: TwoTowerModel) -> tf.types.experimental.ConcreteFunction:
    """The `serving_default` function: a dict of raw features (strings; float32 `[batch,
    dim]` for numeric and vector features, NaN when missing) -> {"embedding":
    `[batch, dim]`} and, for a Multi-CLRec model, "intentions": `[batch, H, dim]`."""
    specs = model.query_tower.input_specs()

    @tf.function(input_signature=[specs])
    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        embeddings = model.query_embeddings(features)
        outputs = {contracts.EMBEDDING_OUTPUT: embeddings}
        if model.intentions:  # Multi-CLRec: also the H intention vectors
            outputs[contracts.INTENTIONS_OUTPUT] = model.intention_vectors(embeddings)
        return outputs

    return serve.get_concrete_function()


def _validate(
    staging: str,
    model: TwoTowerModel,
    embeddings: np.ndarray,
    features: Mapping[str, np.ndarray],
    index: ItemIndexBuilder,
    options: ExportOptions,
) -> dict[str, Any]:
    """Reloads the staged version and checks it against the trained model.

    Raises:
      NonFiniteExport: a non-finite embedding, intention vector or index score.
      ValueError: a reloaded score differs from the trained model's.
    """
    tower_dir = os.path.join(staging, contracts.QUERY_TOWER_DIR)
    reloaded = tf.saved_model.load(tower_dir).signatures[contracts.SIGNATURE]
    users = {name: v[: options.validation_users] for name, v in features.items()}
    num_users = len(next(iter(users.values())))
    as_tensors = model.query_tower.inputs_from(users, num_users)
    trained = model.query_embeddings(as_tensors).numpy()
    check_finite("query embeddings of the trained model", trained)
    # Every user's embedding comes from these: a NaN row would reach only some users.
    for weight in model.query_tower.weights:
        if weight.dtype.is_floating:
            check_finite(f"query tower weights {weight.name}", weight.numpy())
    outputs = reloaded(**as_tensors)
    served = outputs[contracts.EMBEDDING_OUTPUT].numpy()
    check_finite("query embeddings of the reloaded SavedModel", served)
    query_diff = float(np.max(np.abs(trained - served)))
    if model.intentions:  # the intention vectors are query embeddings too
        trained_h = model.intention_vectors(tf.constant(trained)).numpy()
        served_h = outputs[contracts.INTENTIONS_OUTPUT].numpy()
        check_finite("intention vectors of the reloaded SavedModel", served_h)
        query_diff = max(query_diff, float(np.max(np.abs(trained_h - served_h))))
    warmup = [
        reloaded(**{n: tf.make_ndarray(t) for n, t in r.inputs.items()})
        for r in read_warmup_requests(tower_dir)
    ]
    items_dir = os.path.join(staging, contracts.ITEMS_DIR)
    saved = np.load(os.path.join(items_dir, contracts.ITEM_EMBEDDINGS))
    item_diff = float(np.max(np.abs(saved - embeddings)))
    k = min(10, len(embeddings))
    found, scores = index.load(os.path.join(items_dir, contracts.INDEX_DIR)).search(served, k)
    no_exclusions = [np.zeros(0, np.int64)] * len(served)
    exact = top_k(lambda rows: served[rows] @ embeddings.T, len(served), k, no_exclusions)
    recall = float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact, strict=True)]))
    # Reordering rescored the candidates exactly, so their scores are true inner products.
    true_scores = np.einsum("bd,bkd->bk", served, embeddings[np.maximum(found, 0)])
    check_finite("index search scores", np.where(found >= 0, scores, 0.0))
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
    # Written so that a NaN anywhere fails (`nan <= x` is False).
    failed = [
        name
        for name, scale in scales.items()
        if not (result[name] <= options.tolerance * max(1.0, float(scale)))
    ]
    result["passed"] = not failed
    if failed:
        raise ValueError(
            f"{staging}: reloaded export differs from the trained model: "
            + ", ".join(f"{n}={result[n]:.3g}" for n in failed)
        )
    return result


def write_export(
    export_dir: str,
    model: TwoTowerModel,
    item_ids: list[str],
    embeddings: np.ndarray,
    query_features: Mapping[str, np.ndarray],
    *,
    index: ItemIndexBuilder,
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
      index: builds the item index and loads it back (`serving.index_io.IndexBuilder`).
      options: see `ExportOptions` (`version` 0 means one above the newest).
      similarity: the model's similarity, recorded for readers; "cosine" builds a
        spherical index.
      source: where the model came from (run directory, ...), recorded.

    Returns:
      The version's manifest (also `export_manifest.json`).

    Raises:
      FileExistsError: `version` already exists.
      NonFiniteExport: non-finite embeddings or index scores (a diverged model).
      ExportLocked: another export of `export_dir` held the lock past the timeout.
      ValueError: the SavedModel holds non-standard ops, or validation failed.
    """
    options = options or ExportOptions()
    check_finite("item embeddings", np.asarray(embeddings))
    with export_lock(export_dir, options.lock_timeout_s):
        remove_stale_staging(export_dir)
        version = next_version(export_dir, options.version)
        staging = staging_dir(export_dir, version)
        try:
            manifest = _stage(
                staging, model, item_ids, embeddings, query_features, index, options, similarity
            )
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
    index_builder: ItemIndexBuilder,
    options: ExportOptions,
    similarity: str,
) -> dict[str, Any]:
    """Writes the version under `staging` and validates it; returns the manifest body."""
    tower_dir = os.path.join(staging, contracts.QUERY_TOWER_DIR)
    module = tf.Module()
    module.query_tower = model.query_tower  # tracks only the query side's variables
    module.intentions = model.intention_layers  # and Multi-CLRec's projections, if any
    signature = query_signature(model)
    tf.saved_model.save(module, tower_dir, signatures={contracts.SIGNATURE: signature})
    ops = assert_standard_ops(tower_dir)
    inputs = signature.structured_input_signature[0][0]
    kinds = model.query_tower.input_kinds()
    num_users = len(next(iter(query_features.values())))
    features = {
        name: value.numpy()
        for name, value in model.query_tower.inputs_from(dict(query_features), num_users).items()
    }
    warmup = write_warmup_requests(
        tower_dir, features, options.model_name, num_requests=options.warmup_requests
    )

    items_dir = os.path.join(staging, contracts.ITEMS_DIR)
    os.makedirs(items_dir)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    np.save(os.path.join(items_dir, contracts.ITEM_EMBEDDINGS), embeddings)
    with open(os.path.join(items_dir, contracts.ITEM_IDS), "w") as f:
        f.writelines(f"{item}\n" for item in item_ids)
    start = time.perf_counter()
    index = index_builder.build(embeddings, spherical=similarity == "cosine")
    build_seconds = time.perf_counter() - start
    index.save(os.path.join(items_dir, contracts.INDEX_DIR))

    retrieval = None
    if options.retrieval_model != "none":
        retrieval = save_retrieval_model(
            os.path.join(staging, contracts.RETRIEVAL_DIR),
            model,
            item_ids,
            embeddings,
            kind=options.retrieval_model,
            k=options.retrieval_k,
            index_config=index.describe()["config"],
            signature=query_signature(model),
        )

    validation = _validate(staging, model, embeddings, features, index_builder, options)
    return {
        "query_tower": {
            "model_name": options.model_name,
            "signature": contracts.SIGNATURE,
            "inputs": {
                name: {
                    "dtype": spec.dtype.name,
                    "shape": spec.shape.as_list(),
                    **kinds[name],
                }
                for name, spec in inputs.items()
            },
            "output": _outputs(model, int(embeddings.shape[1])),
            "intentions": model.intentions,
            "ops": ops,
            "warmup": {"file": contracts.WARMUP_FILE, **warmup},
        },
        "items": {"count": len(item_ids), "dim": int(embeddings.shape[1])},
        "index": {**index.describe(), "build_seconds": round(build_seconds, 3)},
        "retrieval_model": retrieval,
        "validation": validation,
    }


def _outputs(model: TwoTowerModel, dim: int) -> dict[str, list[int | None]]:
    outputs: dict[str, list[int | None]] = {contracts.EMBEDDING_OUTPUT: [None, dim]}
    if model.intentions:
        outputs[contracts.INTENTIONS_OUTPUT] = [None, model.intentions, dim]
    return outputs


def _publish(export_dir: str, staging: str, version: int, manifest: dict[str, Any]) -> None:
    """Fills in the version's paths and publishes it (`trainer.publish.publish`)."""
    items = f"{contracts.ITEMS_DIR}/{version}"
    manifest["query_tower"]["path"] = f"{contracts.QUERY_TOWER_DIR}/{version}"
    manifest["items"]["embeddings"] = f"{items}/{contracts.ITEM_EMBEDDINGS}"
    manifest["items"]["ids"] = f"{items}/{contracts.ITEM_IDS}"
    manifest["index"]["path"] = f"{items}/{contracts.INDEX_DIR}"
    if manifest["retrieval_model"]:
        manifest["retrieval_model"]["path"] = f"{contracts.RETRIEVAL_DIR}/{version}"
    towers = os.path.join(export_dir, contracts.QUERY_TOWER_DIR)
    manifest["query_tower"]["versions"] = sorted({*versions(towers), version})
    manifest["query_tower"]["latest"] = version
    publish(export_dir, staging, version, manifest)


def export_run(
    run_dir: str, *, index: ItemIndexBuilder, options: ExportOptions | None = None
) -> dict[str, Any]:
    """Exports the query tower, item embeddings and item index of a trained run.

    Args:
      run_dir: a finished `twotower train` run.
      index: builds and reloads the item index (`serving.index_io.IndexBuilder`).
      options: version, warm-up, optional retrieval model (`ExportOptions`).

    Returns:
      The export manifest (also written to `export/export_manifest.json`).

    Raises:
      FileExistsError: `version` already exists.
      ValueError: non-standard ops in the query tower, or the reloaded export differs.
    """
    config, dataset, model = load_run(run_dir)
    queries = eval_queries(dataset)
    if not queries.users:
        raise ValueError(f"{run_dir}: the dataset has no eval users for warm-up requests")
    return write_export(
        os.path.join(run_dir, contracts.EXPORT_DIR),
        model,
        list(dataset.item_ids),
        item_embeddings(model, dataset.item_ids),
        queries.features,
        index=index,
        options=options,
        similarity=config.model.similarity,
        source={"run_dir": os.path.abspath(run_dir)},
    )
