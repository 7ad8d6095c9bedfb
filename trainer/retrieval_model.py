"""The optional TFRS retrieval SavedModel (query tower + top-K layer) of an export.

Stock TF Serving cannot run ScaNN's ops, so this model is optional (`--retrieval-model`):
it serves users who run a TF Serving build with ScaNN. The default path is the query
tower in TF Serving and the index in the retrieval service (docs/serving.md).
"""

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from serving import export_version as layout
from trainer.model import TwoTowerModel
from trainer.standard_ops import saved_model_ops

if TYPE_CHECKING:
    from trainer.export import ExportOptions


def save_retrieval_model(
    path: str,
    model: TwoTowerModel,
    item_ids: list[str],
    embeddings: np.ndarray,
    options: "ExportOptions",
    signature: tf.types.experimental.ConcreteFunction,
) -> dict[str, Any]:
    """A TFRS top-K SavedModel: raw user features -> {"scores", "item_ids"} `[batch, k]`.

    `signature` is the query tower's serving function; its inputs are reused.
    """
    import tensorflow_recommenders as tfrs  # noqa: PLC0415

    k = min(options.retrieval_k, len(item_ids))
    if options.retrieval_model == "scann":
        config = options.index.resolved(len(item_ids))
        leaves = config.num_leaves or max(1, min(len(item_ids) // 50, 100))
        layer = tfrs.layers.factorized_top_k.ScaNN(
            k=k,
            num_leaves=leaves,
            num_leaves_to_search=config.num_leaves_to_search or leaves,
            dimensions_per_block=options.index.dimensions_per_block,
            num_reordering_candidates=max(k, options.index.reordering_num_neighbors),
        )
    else:
        layer = tfrs.layers.factorized_top_k.BruteForce(k=k)
    layer.index(tf.constant(embeddings), tf.constant(item_ids))
    specs = signature.structured_input_signature[0][0]

    @tf.function(input_signature=[specs])
    def retrieve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        scores, ids = layer(model.query_embeddings(features))
        return {"scores": scores, "item_ids": ids}

    module = tf.Module()
    module.query_tower = model.query_tower
    module.top_k = layer
    tf.saved_model.save(
        module,
        path,
        signatures={"serving_default": retrieve.get_concrete_function()},
        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]),
    )
    return {"kind": options.retrieval_model, "k": k, "outputs": ["scores", "item_ids"]}


def validate_retrieval_model(
    staging: str, users: Mapping[str, tf.Tensor], exact: np.ndarray
) -> dict[str, Any]:
    """Top-K agreement of the reloaded retrieval SavedModel with exact search."""
    path = os.path.join(staging, layout.RETRIEVAL_DIR)
    if not os.path.exists(path):
        return {}
    from scann.scann_ops.py import scann_ops  # noqa: F401, PLC0415  (registers Scann* ops)

    with open(os.path.join(staging, layout.ITEMS_DIR, layout.ITEM_IDS)) as f:
        row = {line.rstrip("\n"): i for i, line in enumerate(f)}
    top = tf.saved_model.load(path).signatures["serving_default"](**users)["item_ids"].numpy()
    k = min(exact.shape[1], top.shape[1])
    found = [{row[i.decode()] for i in ids[:k]} for ids in top]
    recall = np.mean([len(f & set(e[:k])) / k for f, e in zip(found, exact, strict=True)])
    return {
        "retrieval_model_recall_vs_brute_force": float(recall),
        "retrieval_model_ops": sorted(saved_model_ops(path) - set(dir(tf.raw_ops))),
    }
