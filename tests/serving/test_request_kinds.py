"""Numeric and vector user features through the retrieval service (issue 13, item 5).

A toy query tower with the export contract's signature (user_id string `[None]`, a
categorical `user.gender` `[None, None]` string, `user.age` float32 `[None, 1]`, `user.emb`
float32 `[None, 3]`) shows in its embedding what reached it: a missing value (NaN) comes
out as a marker. The item embeddings are the identity, so item `i<j>`'s score is the
embedding's component j.
"""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import get_json, post_json
from tf_serving_standin import Models, start_grpc

from common import contracts
from serving import query_embedder
from serving.brute_force_index import BruteForceIndex
from serving.export_version import load_export_version
from serving.query_embedder import GrpcEmbedder, RestEmbedder, SavedModelEmbedder, predict_request
from serving.query_features import feature_batch, input_specs
from serving.retrieval_service import RetrievalService
from serving.service import run_in_thread
from serving.service_config import ServiceConfig
from trainer.warmup import write_warmup_requests

DIM = 5
AGE_MISSING = 100.0  # the toy tower's "learned" missing values
EMB_MISSING = -1.0
INPUTS = {
    "user_id": {"dtype": "string", "shape": [None], "kind": "id"},
    "user.gender": {"dtype": "string", "shape": [None, None], "kind": "categorical"},
    "user.age": {"dtype": "float32", "shape": [None, 1], "kind": "numeric", "dim": 1},
    "user.emb": {"dtype": "float32", "shape": [None, 3], "kind": "vector", "dim": 3},
}
OLD_INPUTS = {  # a manifest from before feature kinds
    "user_id": {"dtype": "string", "shape": [None]},
    "user.gender": {"dtype": "string", "shape": [None, None]},
}
QUERY = {
    "user_id": "u1",
    "features": {"gender": ["f", "m"], "age": 3.5, "emb": [0.5, 1.5, -0.25]},
}


def _string_part(user_id: tf.Tensor, gender: tf.Tensor) -> tf.Tensor:
    """`[batch, 1]`: the number of "f" tokens, plus 1 for user "u1"."""
    tokens = tf.reduce_sum(tf.cast(tf.equal(gender, "f"), tf.float32), axis=1)
    return (tokens + tf.cast(tf.equal(user_id, "u1"), tf.float32))[:, None]


def _dense_tower() -> tuple[tf.Module, tf.types.experimental.ConcreteFunction]:
    """embedding = [age or 100, emb (each NaN -> -1), #"f" + (user_id == "u1")]."""
    specs = {
        name: tf.TensorSpec(spec["shape"], spec["dtype"], name=name)
        for name, spec in INPUTS.items()
    }

    @tf.function(input_signature=[specs])
    def serve(features):
        age = features["user.age"]
        emb = features["user.emb"]
        parts = [
            tf.where(tf.math.is_nan(age), AGE_MISSING, age),
            tf.where(tf.math.is_nan(emb), EMB_MISSING, emb),
            _string_part(features["user_id"], features["user.gender"]),
        ]
        return {contracts.EMBEDDING_OUTPUT: tf.concat(parts, axis=1)}

    module = tf.Module()
    module.serve = serve
    return module, serve.get_concrete_function()


def _string_tower() -> tuple[tf.Module, tf.types.experimental.ConcreteFunction]:
    """The pre-kinds signature: embedding = [#"f" + (user_id == "u1"), 0, 0, 0, 0]."""
    specs = {
        name: tf.TensorSpec(spec["shape"], tf.string, name=name)
        for name, spec in OLD_INPUTS.items()
    }

    @tf.function(input_signature=[specs])
    def serve(features):
        part = _string_part(features["user_id"], features["user.gender"])
        return {contracts.EMBEDDING_OUTPUT: tf.pad(part, [[0, 0], [0, DIM - 1]])}

    module = tf.Module()
    module.serve = serve
    return module, serve.get_concrete_function()


def _write_export(export_dir: str, tower, inputs: dict, warmup_users: list[dict]) -> None:
    """Version 1 of an export directory, laid out as `trainer.export` writes one."""
    module, signature = tower
    tower_dir = os.path.join(export_dir, contracts.QUERY_TOWER_DIR, "1")
    tf.saved_model.save(module, tower_dir, signatures={contracts.SIGNATURE: signature})
    write_warmup_requests(
        tower_dir, feature_batch(warmup_users, inputs), contracts.MODEL_NAME, num_requests=2
    )
    items = f"{contracts.ITEMS_DIR}/1"
    os.makedirs(os.path.join(export_dir, items))
    np.save(
        os.path.join(export_dir, items, contracts.ITEM_EMBEDDINGS), np.eye(DIM, dtype=np.float32)
    )
    with open(os.path.join(export_dir, items, contracts.ITEM_IDS), "w") as f:
        f.writelines(f"i{j}\n" for j in range(DIM))
    BruteForceIndex(np.eye(DIM, dtype=np.float32)).save(
        os.path.join(export_dir, items, contracts.INDEX_DIR)
    )
    manifest = {
        "version": 1,
        "created_at": "2024-06-06T00:00:00Z",
        "similarity": "dot",
        "query_tower": {
            "path": f"{contracts.QUERY_TOWER_DIR}/1",
            "model_name": contracts.MODEL_NAME,
            "signature": contracts.SIGNATURE,
            "inputs": inputs,
            "output": {contracts.EMBEDDING_OUTPUT: [None, DIM]},
            "intentions": 0,
        },
        "items": {
            "count": DIM,
            "dim": DIM,
            "embeddings": f"{items}/{contracts.ITEM_EMBEDDINGS}",
            "ids": f"{items}/{contracts.ITEM_IDS}",
        },
        "index": {"kind": "brute_force", "path": f"{items}/{contracts.INDEX_DIR}"},
    }
    for path in (
        os.path.join(export_dir, items, contracts.VERSION_MANIFEST),
        os.path.join(export_dir, contracts.EXPORT_MANIFEST),
    ):
        with open(path, "w") as f:
            json.dump(manifest, f)


WARMUP_USERS = [
    {"user_id": "u1", "user.gender": ["f"], "user.age": 30.0, "user.emb": [0.1, 0.2, 0.3]},
    {"user_id": "u2"},  # every feature missing
]


@pytest.fixture(scope="module")
def dense_export(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dense_export"))
    _write_export(path, _dense_tower(), INPUTS, WARMUP_USERS)
    return path


@pytest.fixture(scope="module")
def dense_url(dense_export):
    service = RetrievalService(dense_export, ServiceConfig(reload_interval_s=0))
    server = run_in_thread(service)
    yield server.url
    server.stop()
    service.close()


def _direct(export_dir: str, **features) -> np.ndarray:
    """The SavedModel's embedding for hand-built tensors (no serving code on the way)."""
    model = tf.saved_model.load(os.path.join(export_dir, contracts.QUERY_TOWER_DIR, "1"))
    return model.signatures[contracts.SIGNATURE](**features)[contracts.EMBEDDING_OUTPUT].numpy()


def _scores(body: dict, row: int = 0) -> dict[str, float]:
    return {i["item_id"]: i["score"] for i in body["results"][row]["items"]}


def test_a_valid_request_scores_what_the_saved_model_gives(dense_export, dense_url):
    status, body = post_json(f"{dense_url}/v1/retrieve", {"queries": [QUERY], "k": 3})
    assert status == 200, body
    direct = _direct(
        dense_export,
        user_id=tf.constant(["u1"]),
        **{"user.gender": tf.constant([["f", "m"]])},
        **{"user.age": tf.constant([[3.5]])},
        **{"user.emb": tf.constant([[0.5, 1.5, -0.25]])},
    )
    # [age 3.5, emb 0.5 1.5 -0.25, one "f" + u1 = 2]: the top 3 are i0, i4, i2
    np.testing.assert_array_equal(direct, [[3.5, 0.5, 1.5, -0.25, 2.0]])
    assert [i["item_id"] for i in body["results"][0]["items"]] == ["i0", "i4", "i2"]
    assert _scores(body) == pytest.approx({"i0": 3.5, "i4": 2.0, "i2": 1.5})


def test_missing_numeric_and_vector_values_reach_the_model_as_nan(dense_url):
    queries = [
        {"user_id": "u2", "features": {"gender": [], "age": None, "emb": [1.0, 2.0, 3.0]}},
        {"user_id": "u2", "features": {"gender": "f", "age": 4.0, "emb": None}},
    ]
    status, body = post_json(f"{dense_url}/v1/retrieve", {"queries": queries, "k": DIM})
    assert status == 200, body
    # age NaN -> 100; the rest as sent: [100, 1, 2, 3, 0]
    assert _scores(body, 0) == pytest.approx(
        {"i0": 100.0, "i1": 1.0, "i2": 2.0, "i3": 3.0, "i4": 0}
    )
    # emb NaN -> -1 each: [4, -1, -1, -1, 1]
    assert _scores(body, 1) == pytest.approx(
        {"i0": 4.0, "i1": -1.0, "i2": -1.0, "i3": -1.0, "i4": 1}
    )


def test_feature_batch_builds_float32_with_nan_for_missing():
    users = [{"user_id": "a", "user.age": 2, "user.emb": [1, 2, 3]}, {"user_id": "b"}]
    batch = feature_batch(users, input_specs(INPUTS))
    assert batch["user.age"].dtype == np.float32 and batch["user.age"].shape == (2, 1)
    np.testing.assert_array_equal(batch["user.age"], [[2.0], [np.nan]])
    np.testing.assert_array_equal(batch["user.emb"], [[1, 2, 3], [np.nan] * 3])
    assert batch["user.gender"].tolist() == [[b""], [b""]]
    with pytest.raises(ValueError, match=r"users\[0\]\.user\.emb: expected 3 numbers, got 2"):
        feature_batch([{"user_id": "a", "user.emb": [1, 2]}], INPUTS)
    with pytest.raises(ValueError, match=r'users\[0\]\.user\.age: expected a number, got "3"'):
        feature_batch([{"user_id": "a", "user.age": "3"}], INPUTS)


def _with(name, value):
    return {"queries": [{**QUERY, "features": {**QUERY["features"], name: value}}], "k": 3}


F = "queries[0].features"


@pytest.mark.parametrize(
    "body, message",
    [
        (_with("age", "abc"), f'{F}.age: expected a number, got "abc"'),
        (_with("age", True), f"{F}.age: expected a number, got true"),
        (_with("age", [3.5]), f"{F}.age: expected a number, got [3.5]"),
        (_with("age", 1e39), f"{F}.age: expected a number within float32 range"),
        (_with("age", 10**40), f"{F}.age: expected a number within float32 range"),
        (_with("emb", [1.0, 2.0]), f"{F}.emb: expected 3 numbers, got 2"),
        (_with("emb", []), f"{F}.emb: expected 3 numbers, got 0"),
        (_with("emb", 1.0), f"{F}.emb: expected a list of 3 numbers, got 1.0"),
        (_with("emb", [1.0, "a", 2.0]), f'{F}.emb[1]: expected a number, got "a"'),
        (_with("emb", [1.0, None, 2.0]), f"{F}.emb[1]: expected a number, got null"),
        (_with("emb", [1.0, False, 2.0]), f"{F}.emb[1]: expected a number, got false"),
        (_with("gender", 3), f"{F}.gender: expected a token or a list of tokens, got 3"),
        (_with("gender", None), f"{F}.gender: expected a token or a list of tokens, got null"),
        (
            _with("gender", ["f", 1]),
            f'{F}.gender: expected a token or a list of tokens, got ["f", 1]',
        ),
        (_with("emb", {"x": 1}), "queries.0.features.emb: Value error, expected a token"),
        (_with("emb", [[1.0, 2.0, 3.0]]), "queries.0.features.emb: Value error, expected a token"),
    ],
)
def test_a_bad_value_is_a_422_naming_the_field(dense_url, body, message):
    status, answer = post_json(f"{dense_url}/v1/retrieve", body)
    assert status == 422 and message in answer["detail"], answer


@pytest.mark.parametrize(
    "token, message",
    [
        (b"NaN", "expected a finite number, got NaN"),
        (b"-Infinity", "expected a finite number, got -Infinity"),
    ],
)
def test_non_finite_json_tokens_are_a_422(dense_url, token, message):
    # Python's JSON parser takes these non-standard tokens; the service refuses them.
    raw = json.dumps(_with("age", 0.0)).encode().replace(b'"age": 0.0', b'"age": ' + token)
    status, answer = post_json(f"{dense_url}/v1/retrieve", None, raw=raw)
    assert status == 422 and f"{F}.age: {message}" in answer["detail"], answer
    raw = json.dumps(_with("emb", [0.0, 1.0, 2.0])).encode().replace(b"1.0", token)
    status, answer = post_json(f"{dense_url}/v1/retrieve", None, raw=raw)
    assert status == 422 and f"{F}.emb[1]: {message}" in answer["detail"], answer


def test_absent_and_unknown_features_keep_the_exact_names_rule(dense_url):
    features = {"gender": [], "emb": None}  # no "age": null is how a caller says unknown
    status, answer = post_json(
        f"{dense_url}/v1/retrieve", {"queries": [{"user_id": "u", "features": features}], "k": 1}
    )
    assert status == 422 and "missing ['age']" in answer["detail"]
    assert "null for a number or vector" in answer["detail"]
    status, answer = post_json(f"{dense_url}/v1/retrieve", _with("height", 1.8))
    assert status == 422 and "unknown ['height']" in answer["detail"]


def test_metadata_lists_each_user_feature_with_its_kind(dense_url):
    status, metadata = get_json(f"{dense_url}/v1/metadata")
    assert status == 200
    assert metadata["user_features"] == ["gender", "age", "emb"]
    assert metadata["user_feature_kinds"] == {
        "gender": {"kind": "categorical"},
        "age": {"kind": "numeric", "dim": 1},
        "emb": {"kind": "vector", "dim": 3},
    }
    assert metadata["query_tower"]["inputs"]["user.emb"]["dtype"] == "float32"


def test_an_export_without_kinds_still_serves(tmp_path):
    export_dir = str(tmp_path)
    users = [{"user_id": "u1", "user.gender": ["f"]}]
    _write_export(export_dir, _string_tower(), OLD_INPUTS, users)
    service = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0))
    server = run_in_thread(service)
    try:
        query = {"user_id": "u1", "features": {"gender": ["f", "f"]}}
        status, body = post_json(f"{server.url}/v1/retrieve", {"queries": [query], "k": 1})
        # [two "f" + u1 = 3, 0, 0, 0, 0]
        assert status == 200 and body["results"][0]["items"] == [{"item_id": "i0", "score": 3.0}]
        metadata = get_json(f"{server.url}/v1/metadata")[1]
        assert metadata["user_feature_kinds"] == {"gender": {"kind": "categorical"}}
        status, answer = post_json(
            f"{server.url}/v1/retrieve",
            {"queries": [{"user_id": "u1", "features": {"gender": 3}}], "k": 1},
        )
        assert status == 422 and "expected a token or a list of tokens, got 3" in answer["detail"]
    finally:
        server.stop()
        service.close()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"dtype": "float32", "shape": [None, 2], "kind": "vector"}, "needs a dim"),
        ({"dtype": "string", "shape": [None, 2], "kind": "vector", "dim": 2}, "has dtype"),
        ({"dtype": "float32", "shape": [None, 2], "kind": "numeric", "dim": 2}, "1 if numeric"),
        ({"dtype": "float32", "shape": [None, 4], "kind": "vector", "dim": 2}, "does not end"),
        ({"dtype": "float32", "shape": [None, 1], "kind": "image"}, "unknown kind 'image'"),
        ({"dtype": "float32", "shape": [None, 1]}, "without a kind"),
    ],
)
def test_a_bad_input_spec_names_the_manifest_entry(entry, message):
    with pytest.raises(ValueError, match=rf"query_tower\.inputs\.user\.x: .*{message}"):
        input_specs({"user.x": entry})


def test_predict_request_carries_float32_tensors_for_float_inputs():
    users = [{"user_id": "u1", "user.gender": "f", "user.age": 3.5}]  # emb missing
    request = predict_request(feature_batch(users, INPUTS), contracts.MODEL_NAME, version=1)
    inputs = request.inputs
    assert inputs["user.age"].dtype == tf.float32.as_datatype_enum
    assert inputs["user.emb"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in inputs["user.emb"].tensor_shape.dim] == [1, 3]
    np.testing.assert_array_equal(tf.make_ndarray(inputs["user.age"]), [[3.5]])
    assert np.isnan(tf.make_ndarray(inputs["user.emb"])).all()
    assert inputs["user_id"].dtype == tf.string.as_datatype_enum
    assert tf.make_ndarray(inputs["user.gender"]).tolist() == [[b"f"]]
    assert request.model_spec.version.value == 1


def test_grpc_embeddings_equal_in_process(dense_export):
    version = load_export_version(dense_export)
    models = Models(os.path.join(dense_export, contracts.QUERY_TOWER_DIR), contracts.MODEL_NAME)
    server, url, _ = start_grpc(models)
    try:
        batch = feature_batch(WARMUP_USERS, version.inputs)
        remote = GrpcEmbedder(url.removeprefix("grpc://"), contracts.MODEL_NAME, 1).embed(batch)
        local = SavedModelEmbedder(version.saved_model_dir).embed(batch)
        # [30, .1 .2 .3, one "f" + u1 = 2] and, all missing: [100, -1 -1 -1, 0]
        np.testing.assert_allclose(local, [[30, 0.1, 0.2, 0.3, 2], [100, -1, -1, -1, 0]], rtol=1e-6)
        np.testing.assert_array_equal(remote, local)
        assert models.warmed_up == {1: 2}  # the warm-up file with float inputs replays
    finally:
        server.stop(grace=None)


def test_rest_sends_numbers_and_the_nan_token(dense_export, monkeypatch):
    """TF Serving's REST API takes a bare `NaN` for a float (api_rest.md, "JSON
    conformance"); this fake server runs the SavedModel on what the body says."""
    version = load_export_version(dense_export)
    local = SavedModelEmbedder(version.saved_model_dir)
    sent = []

    def urlopen(request, timeout):
        sent.append(request.data.decode())
        inputs = json.loads(request.data)["inputs"]
        batch = {
            name: np.asarray(v, dtype=np.float32 if version.inputs[name].dense else object)
            for name, v in inputs.items()
        }
        outputs = local.embed(batch).tolist()
        return io.BytesIO(json.dumps({"outputs": outputs}).encode())

    monkeypatch.setattr(query_embedder.urllib.request, "urlopen", urlopen)
    batch = feature_batch(WARMUP_USERS, version.inputs)
    remote = RestEmbedder("http://tf-serving:8501", contracts.MODEL_NAME, 1).embed(batch)
    np.testing.assert_array_equal(remote, local.embed(batch))
    body = sent[0]
    assert '"user.age": [[30.0], [NaN]]' in body
    # float32 0.1, 0.2, 0.3 written exactly, as float64
    emb = "[[0.10000000149011612, 0.20000000298023224, 0.30000001192092896], [NaN, NaN, NaN]]"
    assert f'"user.emb": {emb}' in body
    assert '"user.gender": [["f"], [""]]' in body
