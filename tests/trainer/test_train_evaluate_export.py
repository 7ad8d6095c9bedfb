"""The trainer's stages on the tiny dataset, through their library entry points."""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from common.config import load_config
from common.settings import ConfigError
from serving.retriever import Retriever
from tests.conftest import export
from trainer.dataset import load_dataset, make_dataset
from trainer.evaluate import evaluate_run
from trainer.train import load_run, train
from twotower.wiring import scann_builder


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tmp_path_factory):
    config = load_config(
        overrides=[
            "training.epochs=3",
            "training.batch_size=16",
            "model.hidden_units=[16]",
            "model.output_dim=8",
            "model.embedding_dim=8",
            "evaluation.ks=[1, 5]",
        ]
    )
    path = str(tmp_path_factory.mktemp("run") / "run")
    train(config, tiny_dataset, path, verbose=0)
    return path


def test_dataset_batches_follow_the_manifest(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    batch = next(iter(make_dataset(dataset, "train", 8)))
    assert batch["user_id"].shape == (8,)
    assert batch["history"].dtype == tf.string and batch["history"].shape.rank == 2
    assert batch["user.segment"].shape[0] == 8
    assert batch["timestamp"].dtype == tf.int64


def test_run_directory_holds_config_history_and_throughput(run_dir):
    assert os.path.exists(os.path.join(run_dir, "config.yaml"))
    run = json.loads(pathlib.Path(os.path.join(run_dir, "run.json")).read_text())
    assert len(run["history"]["loss"]) == 3
    assert all(v > 0 for v in run["history"]["examples_per_second"])
    assert os.listdir(os.path.join(run_dir, "logs"))


def test_reloaded_run_scores_like_the_trained_one(run_dir):
    _, dataset, first = load_run(run_dir)
    _, _, second = load_run(run_dir)
    ids = tf.constant(dataset.item_ids)
    np.testing.assert_allclose(
        first.candidate_embeddings(ids).numpy(), second.candidate_embeddings(ids).numpy()
    )


def test_evaluate_writes_metrics_for_model_and_references(run_dir):
    result = evaluate_run(run_dir)
    assert set(result["methods"]) == {"two_tower", "most_popular", "random"}
    assert result["ks"] == [1, 5]
    assert result["num_users"] == 12  # every tiny user holds out one click
    for values in result["methods"].values():
        assert 0.0 <= values["hit_rate@1"] <= values["hit_rate@5"] <= 1.0
    assert json.loads(pathlib.Path(os.path.join(run_dir, "metrics.json")).read_text()) == result


def test_export_versions_and_retriever_agree_with_the_model(run_dir):
    first = export(run_dir)
    second = export(run_dir)
    assert first["query_tower"]["latest"] == 1 and second["query_tower"]["versions"] == [1, 2]
    with pytest.raises(FileExistsError):
        export(run_dir, version=2)
    export_dir = os.path.join(run_dir, "export")
    retriever = Retriever(export_dir)
    assert retriever.version == 2
    user = {"user_id": "u1", "history": ["i1", "i4"], "user.segment": "s1"}
    _, _, model = load_run(run_dir)
    expected = model.query_embeddings(
        {
            "user_id": tf.constant(["u1"]),
            "history": tf.constant([["i1", "i4"]]),
            "user.segment": tf.constant([["s1"]]),
        }
    ).numpy()
    np.testing.assert_allclose(retriever.embed([user]), expected, rtol=1e-5)
    top = retriever.retrieve(user, k=3, exclude=["i1"])
    assert len(top) == 3 and "i1" not in [item for item, _ in top]
    scores = [score for _, score in top]
    assert scores == sorted(scores, reverse=True)
    assert retriever.item_embeddings.shape == (30, 8)


def test_towers_use_the_datasets_oov_buckets(tiny_logs, tmp_path):
    from tests.conftest import run_preprocess
    from trainer.build import build_model

    run_preprocess(tmp_path / "ds", *tiny_logs, "data.num_oov_buckets=3")
    dataset = load_dataset(str(tmp_path / "ds"))
    model = build_model(load_config(), dataset)
    assert dataset.num_oov_buckets == 3
    assert model.query_tower.get_config()["num_oov_buckets"] == 3
    vocabulary = len(dataset.vocabularies["user_id"])
    # padding + 3 OOV buckets + the vocabulary
    assert model.query_tower._user_id._lookup.vocabulary_size() == vocabulary + 4


def test_evaluate_through_scann_matches_exact_search_on_a_small_catalog(run_dir):
    import yaml

    path = os.path.join(run_dir, "config.yaml")
    original = pathlib.Path(path).read_text()
    config = yaml.safe_load(original)
    config["evaluation"]["scann"] = True
    pathlib.Path(path).write_text(yaml.safe_dump(config))
    try:
        with pytest.raises(ConfigError, match="evaluation.scann: needs a ScaNN index builder"):
            evaluate_run(run_dir, write=False, plots=False)
        result = evaluate_run(run_dir, write=False, plots=False, scann=scann_builder())
    finally:
        pathlib.Path(path).write_text(original)
    exact, approximate = result["methods"]["two_tower"], result["methods"]["two_tower_scann"]
    # 30 items: ScaNN's reordering rescoring recovers the exact top 5.
    assert approximate["hit_rate@5"] == exact["hit_rate@5"]
    assert approximate["recall@5"] == exact["recall@5"]
