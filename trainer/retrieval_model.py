"""The optional TFRS retrieval SavedModel (query tower + top-K layer) of an export.

Stock TF Serving cannot run ScaNN's ops, so this model is optional (`--retrieval-model`):
it serves users who run a TF Serving build with ScaNN. The default path is the query
tower in TF Serving and the index in the retrieval service (docs/serving.md).
"""

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from common import contracts
from trainer.model import TwoTowerModel
from trainer.standard_ops import saved_model_ops


def save_retrieval_model(
    path: str,
    model: TwoTowerModel,
    item_ids: list[str],
    embeddings: np.ndarray,
    *,
    kind: str,
    k: int,
    index_config: Mapping[str, Any],
    signature: tf.types.experimental.ConcreteFunction,
) -> dict[str, Any]:
    """A TFRS top-K SavedModel: raw user features -> {"scores", "item_ids"} `[batch, k]`.

    Args:
      path: the SavedModel folder to write.
      model: the trained model (its query tower is saved).
      item_ids: `[num_items]` ids, returned for the top rows.
      embeddings: `[num_items, dim]` item embeddings.
      kind: "scann" (TFRS's ScaNN layer) or "brute_force".
      k: items returned per query (at most the corpus).
      index_config: the export's resolved item index settings; the ScaNN layer takes its
        leaves, leaves searched, AH block size and reordering from them.
      signature: the query tower's serving function; its inputs are reused.
    """
    import tensorflow_recommenders as tfrs  # noqa: PLC0415

    k = min(k, len(item_ids))
    if kind == "scann":
        leaves = index_config.get("num_leaves") or max(1, min(len(item_ids) // 50, 100))
        layer = tfrs.layers.factorized_top_k.ScaNN(
            k=k,
            num_leaves=leaves,
            num_leaves_to_search=index_config.get("num_leaves_to_search") or leaves,
            dimensions_per_block=index_config.get("dimensions_per_block", 2),
            num_reordering_candidates=max(k, index_config.get("reordering_num_neighbors", k)),
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
        signatures={contracts.SIGNATURE: retrieve.get_concrete_function()},
        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]),
    )
    return {"kind": kind, "k": k, "outputs": ["scores", "item_ids"]}


def validate_retrieval_model(
    staging: str, users: Mapping[str, tf.Tensor], exact: np.ndarray
) -> dict[str, Any]:
    """Top-K agreement of the reloaded retrieval SavedModel with exact search."""
    path = os.path.join(staging, contracts.RETRIEVAL_DIR)
    if not os.path.exists(path):
        return {}
    from scann.scann_ops.py import scann_ops  # noqa: F401, PLC0415  (registers Scann* ops)

    with open(os.path.join(staging, contracts.ITEMS_DIR, contracts.ITEM_IDS)) as f:
        row = {line.rstrip("\n"): i for i, line in enumerate(f)}
    top = tf.saved_model.load(path).signatures[contracts.SIGNATURE](**users)["item_ids"].numpy()
    k = min(exact.shape[1], top.shape[1])
    found = [{row[i.decode()] for i in ids[:k]} for ids in top]
    recall = np.mean([len(f & set(e[:k])) / k for f, e in zip(found, exact, strict=True)])
    return {
        "retrieval_model_recall_vs_brute_force": float(recall),
        "retrieval_model_ops": sorted(saved_model_ops(path) - set(dir(tf.raw_ops))),
    }
