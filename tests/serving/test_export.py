"""`export_run`: layout, manifest, warm-up, standard ops, validation, atomicity."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from serving.export_version import load_export_version, read_manifest
from serving.index_config import IndexConfig
from tests.conftest import export
from trainer import export as export_module
from trainer.evaluate import eval_queries
from trainer.standard_ops import assert_standard_ops, nonstandard_ops
from trainer.train import load_run
from trainer.warmup import read_warmup_requests


def test_export_layout_and_manifest(exported):
    run_dir, export_dir = exported
    manifest = read_manifest(export_dir)
    assert manifest["version"] == 1 and manifest["query_tower"]["versions"] == [1]
    assert manifest["source"]["run_dir"] == os.path.abspath(run_dir)
    for relative in (
        "query_tower/1/saved_model.pb",
        "query_tower/1/assets.extra/tf_serving_warmup_requests",
        "items/1/item_embeddings.npy",
        "items/1/item_ids.txt",
        "items/1/index/index_config.json",
        "items/1/manifest.json",
    ):
        assert os.path.exists(os.path.join(export_dir, relative)), relative
    assert not [n for n in os.listdir(export_dir) if n.startswith(".") and n != ".lock"]
    assert manifest["items"] == {
        "count": 30,
        "dim": 8,
        "embeddings": "items/1/item_embeddings.npy",
        "ids": "items/1/item_ids.txt",
    }
    # 30 items is far below 20k: the index is exact
    assert manifest["index"]["kind"] == "brute_force"
    assert manifest["query_tower"]["inputs"]["user.segment"] == {
        "dtype": "string",
        "shape": [None, None],
        "kind": "categorical",
    }
    assert manifest["retrieval_model"] is None
    with open(os.path.join(export_dir, "items/1/manifest.json")) as f:
        assert json.load(f) == json.loads(json.dumps(manifest))


def test_validation_reloads_and_matches_the_trained_model(exported):
    run_dir, export_dir = exported
    validation = read_manifest(export_dir)["validation"]
    assert validation["passed"] and validation["users"] == 12
    assert validation["query_embedding_max_abs_diff"] <= 1e-5
    assert validation["index_recall_vs_brute_force"] == 1.0
    # independently: the served query tower scores like the trained model
    _, dataset, model = load_run(run_dir)
    features = {
        k: tf.constant(v)
        for k, v in eval_queries(dataset).features.items()
        if k in ("user_id", "history", "user.segment")
    }
    served = tf.saved_model.load(os.path.join(export_dir, "query_tower/1"))
    np.testing.assert_allclose(
        served.signatures["serving_default"](**features)["embedding"].numpy(),
        model.query_embeddings(features).numpy(),
        atol=1e-6,
    )


def test_warmup_requests_are_real_eval_users(exported):
    _, export_dir = exported
    requests = read_warmup_requests(os.path.join(export_dir, "query_tower/1"))
    assert len(requests) == 8  # 7 single users + 1 batch
    assert {r.model_spec.name for r in requests} == {"query_tower"}
    assert {r.model_spec.signature_name for r in requests} == {"serving_default"}
    users = [tf.make_ndarray(r.inputs["user_id"]).tolist() for r in requests]
    assert users[0] == [b"u0"] and len(users[-1]) == 12  # every eval user of the tiny world
    assert set(requests[0].inputs) == {"user_id", "history", "user.segment"}


def test_query_tower_has_only_standard_ops(exported):
    _, export_dir = exported
    ops = assert_standard_ops(os.path.join(export_dir, "query_tower/1"))
    assert "LookupTableFindV2" in ops and not [op for op in ops if "Scann" in op]
    assert read_manifest(export_dir)["query_tower"]["ops"] == ops


def test_versions_are_never_overwritten(fresh_run):
    assert export(fresh_run)["version"] == 1
    with pytest.raises(FileExistsError, match="never overwritten"):
        export(fresh_run, version=1)
    assert export(fresh_run, version=5)["query_tower"]["versions"] == [1, 5]
    assert export(fresh_run)["version"] == 6
    # an older version stays loadable by number, with its own manifest
    old = load_export_version(os.path.join(fresh_run, "export"), version=5)
    assert old.version == 5 and old.manifest["query_tower"]["path"] == "query_tower/5"
    with pytest.raises(FileNotFoundError, match="version 3"):
        load_export_version(os.path.join(fresh_run, "export"), version=3)


def test_a_failed_export_publishes_nothing(fresh_run, monkeypatch):
    export(fresh_run)
    export_dir = os.path.join(fresh_run, "export")
    before = read_manifest(export_dir)

    def broken(*args, **kwargs):
        raise ValueError("reloaded export differs")

    monkeypatch.setattr(export_module, "_validate", broken)
    with pytest.raises(ValueError, match="differs"):
        export(fresh_run)
    assert read_manifest(export_dir) == before
    for part in ("query_tower", "items"):
        assert sorted(os.listdir(os.path.join(export_dir, part))) == ["1"]
    assert not [n for n in os.listdir(export_dir) if n.startswith(".") and n != ".lock"]


@pytest.mark.parametrize("kind", ["brute_force", "scann"])
def test_optional_retrieval_model(fresh_run, kind):
    manifest = export(fresh_run, retrieval_model=kind, retrieval_k=5)
    path = os.path.join(fresh_run, "export", manifest["retrieval_model"]["path"])
    assert manifest["validation"]["retrieval_model_recall_vs_brute_force"] == 1.0
    if kind == "scann":
        # the ScaNN variant needs a TF Serving built with ScaNN's ops; stock one refuses it
        assert nonstandard_ops(path) == ["Scann>ScannSearchBatched", "Scann>TensorsToScann"]
        with pytest.raises(ValueError, match="Scann"):
            assert_standard_ops(path)
    else:
        assert nonstandard_ops(path) == []


def test_scann_item_index_is_exported_and_loads(fresh_run):
    manifest = export(fresh_run, index=IndexConfig(kind="scann", partition_above=0))
    # sqrt(30) -> 5 leaves, a tenth of them (at least one) searched
    assert manifest["index"]["kind"] == "scann"
    assert manifest["index"]["config"]["num_leaves"] == 5
    loaded = load_export_version(os.path.join(fresh_run, "export"))
    assert loaded.index.kind == "scann" and len(loaded.item_ids) == 30
