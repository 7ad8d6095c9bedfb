"""`twotower export`: a trained run -> `export/` for serving.

  export/query_tower/<version>/   SavedModel, `serving_default`: raw user features ->
                                  {"embedding": [batch_size, dim]}, as TF Serving loads it
  export/item_embeddings.npy      [num_items, dim] float32, catalog order
  export/item_ids.txt             the item id of each row
  export/export_manifest.json     versions, signature, dims, corpus size, source run

A version folder is written under a temporary name and renamed, so TF Serving, which
watches the folder, never sees a half-written model; an existing version is never
overwritten.
"""

import datetime
import json
import os
import shutil
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.evaluate import item_embeddings
from trainer.model import TwoTowerModel
from trainer.train import load_run

QUERY_TOWER_DIR = "query_tower"
EXPORT_MANIFEST = "export_manifest.json"


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


def export_run(run_dir: str, version: int = 0) -> dict[str, Any]:
    """Exports the query tower and the item embeddings of a trained run.

    Args:
      run_dir: a finished `twotower train` run.
      version: the version folder to write; 0 means one above the newest.

    Returns:
      The export manifest (also written to `export/export_manifest.json`).

    Raises:
      FileExistsError: `version` already exists.
    """
    config, dataset, model = load_run(run_dir)
    export_dir = os.path.join(run_dir, "export")
    base = os.path.join(export_dir, QUERY_TOWER_DIR)
    version = version or (max(_versions(base), default=0) + 1)
    final = os.path.join(base, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; versions are never overwritten")
    os.makedirs(base, exist_ok=True)
    staging = os.path.join(base, f".tmp-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    module = tf.Module()
    module.query_tower = model.query_tower  # tracks only the query side's variables
    signature = query_signature(model)
    tf.saved_model.save(module, staging, signatures={"serving_default": signature})
    os.rename(staging, final)

    embeddings = item_embeddings(model, dataset.item_ids)
    np.save(os.path.join(export_dir, "item_embeddings.npy"), embeddings)
    with open(os.path.join(export_dir, "item_ids.txt"), "w") as f:
        f.writelines(f"{item}\n" for item in dataset.item_ids)
    manifest = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run_dir": os.path.abspath(run_dir),
        "query_tower": {
            "versions": _versions(base),
            "latest": version,
            "signature": "serving_default",
            "inputs": {
                name: {"dtype": "string", "shape": spec.shape.as_list()}
                for name, spec in signature.structured_input_signature[0][0].items()
            },
            "output": {"embedding": [None, int(embeddings.shape[1])]},
        },
        "items": {
            "count": int(embeddings.shape[0]),
            "dim": int(embeddings.shape[1]),
            "embeddings": "item_embeddings.npy",
            "ids": "item_ids.txt",
        },
        "similarity": config.model.similarity,
    }
    with open(os.path.join(export_dir, EXPORT_MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
