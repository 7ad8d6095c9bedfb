"""Multi-CLRec end to end: the intention vectors are trained, exported, served and merged."""

import os

import numpy as np
import pytest
import tensorflow as tf

from common import contracts
from common.config import load_config
from common.intentions import merge_rankings
from serving.api import RetrieveRequest
from serving.query_features import feature_batch
from serving.retrieval_service import RetrievalService
from serving.retriever import Retriever
from serving.service_config import ServiceConfig
from tests.conftest import export
from trainer.evaluate import evaluate_run
from trainer.train import load_run, train

H = 3
USER = {"user_id": "u1", "history": ["i1", "i4"], "user.segment": "s1"}


# The intention queues cached (the default queue_mode), and cached by the main momentum
# queue's item tower, whose copy the export must leave behind.
@pytest.fixture(scope="module", params=["embeddings", "momentum"])
def exported_multi(tiny_dataset, tmp_path_factory, request):
    config = load_config(
        overrides=[
            "training.epochs=2",
            "training.batch_size=16",
            "model.hidden_units=[16]",
            "model.output_dim=8",
            "model.embedding_dim=8",
            "evaluation.ks=[1, 5, 10]",
            "negatives.queue_size=32",
            "negatives.in_batch_correction=none",
            f"negatives.intentions={H}",
            f"negatives.queue_mode={request.param}",
        ]
    )
    run_dir = str(tmp_path_factory.mktemp("multi") / "run")
    train(config, tiny_dataset, run_dir, verbose=0)
    manifest = export(run_dir)
    return run_dir, os.path.join(run_dir, contracts.EXPORT_DIR), manifest


def test_round_robin_gives_each_list_its_quota_and_skips_duplicates():
    main = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    first = np.array([[2, 9, 10, 11], [5, 6, 7, 8]])  # user 2: the same list as main
    second = np.array([[12, 1, 13, -1], [9, -1, -1, -1]])
    merged, origin, scores = merge_rankings(
        [main, first, second], 6, [m * 1.0 for m in (main, first, second)]
    )
    # every list's best, then every list's second (main's 2 and second's 1 already taken)
    assert merged.tolist() == [[1, 2, 12, 9, 3, 10], [5, 9, 6, 7, 8, -1]]
    assert origin.tolist() == [[0, 1, 2, 1, 0, 1], [0, 2, 0, 0, 0, -1]]
    assert scores[0].tolist() == [1, 2, 12, 9, 3, 10] and scores[1, -1] == -np.inf


def test_export_serves_the_intention_vectors(exported_multi):
    run_dir, export_dir, manifest = exported_multi
    assert manifest["query_tower"]["intentions"] == H
    assert manifest["query_tower"]["output"][contracts.INTENTIONS_OUTPUT] == [None, H, 8]
    _, _, model = load_run(run_dir)
    serving = tf.saved_model.load(os.path.join(export_dir, manifest["query_tower"]["path"]))
    inputs = {
        "user_id": tf.constant(["u1", "u2"]),
        "history": tf.constant([["i1", "i4"], ["", ""]]),
        "user.segment": tf.constant([["s1"], ["s0"]]),
    }
    outputs = serving.signatures[contracts.SIGNATURE](**inputs)
    vectors = outputs[contracts.INTENTIONS_OUTPUT].numpy()
    assert vectors.shape == (2, H, 8)
    expected = model.intention_vectors(model.query_embeddings(inputs)).numpy()
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    assert manifest["validation"]["passed"]


def test_retriever_merges_main_and_intention_lists(exported_multi):
    _, export_dir, _ = exported_multi
    retriever = Retriever(export_dir)
    main_only = retriever.retrieve(USER, k=8, intentions=False)
    merged = retriever.retrieve(USER, k=8)
    assert len({item for item, _ in merged}) == 8
    # the main embedding's best item leads; its top 2 (quota 2 of 8) are always in
    assert merged[0] == main_only[0]
    assert {i for i, _ in main_only[:2]} <= {i for i, _ in merged}
    embeddings, ids = retriever.item_embeddings, retriever.item_ids
    outputs = retriever._embedder.outputs(feature_batch([USER], retriever._export.input_names))
    vectors = outputs[contracts.INTENTIONS_OUTPUT][0]
    scores = {ids[r]: [float(v @ embeddings[r]) for v in vectors] for r in range(len(ids))}
    for item, score in merged:  # every score is the item's score under some vector
        main_score = float(outputs[contracts.EMBEDDING_OUTPUT][0] @ embeddings[ids.index(item)])
        assert min(abs(score - s) for s in [main_score, *scores[item]]) < 1e-4


def test_service_marks_which_vector_found_each_item(exported_multi):
    _, export_dir, _ = exported_multi
    service = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0))
    try:
        query = {"user_id": "u1", "history": ["i1", "i4"], "features": {"segment": "s1"}}
        body = service.retrieve(RetrieveRequest(queries=[query], k=8))
        items = body["results"][0]["items"]
        assert items[0]["intention"] == 0 and {i["intention"] for i in items} <= set(range(H + 1))
        expected = Retriever(export_dir).retrieve(USER, k=8)
        assert [i["item_id"] for i in items] == [item for item, _ in expected]
    finally:
        service.close()
    off = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0, intentions=False))
    try:
        body = off.retrieve(RetrieveRequest(queries=[query], k=8))
        assert "intention" not in body["results"][0]["items"][0]
    finally:
        off.close()


def test_evaluation_scores_the_merged_lists(exported_multi):
    run_dir, _, _ = exported_multi
    methods = evaluate_run(run_dir, write=False, plots=False)["methods"]
    merged, main = methods["two_tower_intentions"], methods["two_tower"]
    assert merged["hit_rate@1"] == main["hit_rate@1"]  # the first slot is always main's
    assert merged["aggregate_diversity@10"] >= 1
