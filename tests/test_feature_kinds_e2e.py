"""Every feature kind through preprocess -> train -> export -> reload: the same scores.

User features: numeric (age), vector (taste), categorical (segment). Item features:
numeric (price), vector (content), text (blurb, embedded by the fake encoder of
tests/pipelines/test_feature_kinds.py; the real encoder has its own tests).
"""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from common.config import load_config
from tests.conftest import export, run_preprocess, tiny_world_rows, write_jsonl
from tests.pipelines.test_feature_kinds import fake_encoder  # noqa: F401  (fixture)
from trainer.evaluate import eval_queries
from trainer.train import load_run, train
from trainer.warmup import read_warmup_requests


@pytest.fixture(scope="module")
def content_run(tmp_path_factory, fake_encoder):  # noqa: F811
    root = tmp_path_factory.mktemp("kinds")
    requests, catalog = tiny_world_rows()
    for i, item in enumerate(catalog):
        angle = 2 * math.pi * (i % 3) / 3
        item["features"].update(
            price=float(i), content=[math.cos(angle), math.sin(angle)], blurb=f"item {i % 3}"
        )
    for n, request in enumerate(requests):
        user = int(request["user_id"][1:])
        request["user_features"]["age"] = None if user == 0 else 20.0 + user
        if n % 5:  # some requests without the vector: missing
            request["user_features"]["taste"] = [float(user % 3), 1.0]
    manifest = run_preprocess(
        str(root / "dataset"),
        write_jsonl(str(root / "requests.jsonl"), requests),
        write_jsonl(str(root / "catalog.jsonl"), catalog),
        "data.text_features=[item.blurb]",
        *fake_encoder,
    )
    config = load_config(
        overrides=[
            "training.epochs=2",
            "training.batch_size=16",
            "model.hidden_units=[16]",
            "model.embedding_dim=8",
            "model.output_dim=8",
            "negatives.cluster=2",
            "negatives.cluster_random=1",
            "negatives.cluster_source=content",
        ]
    )
    run_dir = str(root / "run")
    train(config, str(root / "dataset"), run_dir, verbose=0)
    return manifest, run_dir


def test_the_manifest_names_every_kind(content_run):
    manifest, _ = content_run
    kinds = {name: spec["kind"] for name, spec in manifest["features"].items()}
    assert kinds == {
        "user.age": "numeric",
        "user.taste": "vector",
        "user.segment": "categorical",
        "item.band": "categorical",
        "item.price": "numeric",
        "item.content": "vector",
        "item.blurb": "text",
    }


def test_the_towers_read_every_kind(content_run):
    _, run_dir = content_run
    _, dataset, model = load_run(run_dir)
    assert np.isfinite(model.candidate_embeddings(tf.constant(dataset.item_ids)).numpy()).all()
    names = {part for w in model.candidate_tower.weights for part in w.name.split("/")}
    assert {"item_price", "item_content", "item_blurb"} <= names
    specs = model.query_tower.input_specs()
    assert specs["user.age"].dtype == tf.float32 and specs["user.age"].shape[1] == 1
    assert specs["user.taste"].shape[1] == 2 and specs["user.segment"].dtype == tf.string


def test_export_reloads_with_the_same_scores(content_run):
    _, run_dir = content_run
    manifest = export(run_dir)
    inputs = manifest["query_tower"]["inputs"]
    assert inputs["user.age"] == {
        "dtype": "float32",
        "shape": [None, 1],
        "kind": "numeric",
        "dim": 1,
    }
    assert inputs["user.taste"]["dtype"] == "float32" and inputs["user.taste"]["dim"] == 2
    assert inputs["user.segment"]["dtype"] == "string"
    _, dataset, model = load_run(run_dir)
    queries = eval_queries(dataset)
    tensors = model.query_tower.inputs_from(queries.features, len(queries.users))
    assert np.isnan(tensors["user.age"].numpy()).any()  # user u0 has no age: missing
    version = os.path.join(run_dir, "export", "query_tower", str(manifest["version"]))
    reloaded = tf.saved_model.load(version).signatures["serving_default"]
    served = reloaded(**tensors)["embedding"].numpy()
    np.testing.assert_allclose(served, model.query_embeddings(tensors).numpy(), atol=1e-5)
    # TF Serving's warm-up replays float32 tensors for the numeric and vector inputs.
    request = read_warmup_requests(version)[-1]
    assert request.inputs["user.age"].dtype == tf.float32.as_datatype_enum
    replayed = reloaded(**{n: tf.make_ndarray(t) for n, t in request.inputs.items()})
    assert np.isfinite(replayed["embedding"].numpy()).all()
