"""The TF Serving client paths (gRPC PredictionService stub, REST) against stand-ins.

The stand-ins (`tf_serving_standin.py`) serve the exported SavedModel versions from
`export/query_tower/` as TF Serving would; they exist for these tests only.
"""

import os

import numpy as np
import pytest
from tf_serving_standin import Models, start_grpc, start_rest

from serving.api import RetrieveRequest
from serving.export_version import load_export_version
from serving.query_embedder import EmbedderError, SavedModelEmbedder, make_embedder
from serving.query_features import feature_batch
from serving.retrieval_service import RequestError, RetrievalService
from serving.service_config import ServiceConfig

USERS = [
    {"user_id": "u1", "history": ["i1", "i4"], "user.segment": "s1"},
    {"user_id": "u2", "history": [], "user.segment": ["s0"]},
    {"user_id": "never-seen", "history": ["i999"], "user.segment": []},
]


@pytest.fixture(scope="module")
def standins(exported):
    _, export_dir = exported
    models = Models(os.path.join(export_dir, "query_tower"), "query_tower")
    grpc_server, grpc_url, servicer = start_grpc(models)
    rest_server, rest_url = start_rest(models)
    yield {"grpc": grpc_url, "rest": rest_url, "models": models, "servicer": servicer}
    grpc_server.stop(grace=None)
    rest_server.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_tf_serving_embeddings_equal_in_process(exported, standins, protocol):
    _, export_dir = exported
    version = load_export_version(export_dir)
    batch = feature_batch(USERS, version.input_names)
    local = SavedModelEmbedder(version.saved_model_dir).embed(batch)
    remote = make_embedder(standins[protocol], version.saved_model_dir, 1).embed(batch)
    assert remote.shape == (3, 8) and remote.dtype == np.float32
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-6)


def test_standin_replays_the_warmup_file_on_load(standins):
    assert standins["models"].warmed_up == {1: 8}


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_a_version_tf_serving_lacks_is_an_embedder_error(exported, standins, protocol):
    _, export_dir = exported
    embedder = make_embedder(standins[protocol], "unused", version=7)
    with pytest.raises(EmbedderError, match="7"):
        embedder.embed(feature_batch(USERS[:1], ["user_id", "history", "user.segment"]))


def test_unknown_address_scheme_is_refused():
    with pytest.raises(ValueError, match="grpc://host:port"):
        make_embedder("tcp://localhost:8500", "unused", 1)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_service_over_tf_serving_returns_the_in_process_results(exported, standins, protocol):
    _, export_dir = exported
    request = RetrieveRequest(
        queries=[
            {"user_id": "u1", "history": ["i1"], "features": {"segment": "s1"}, "exclude": ["i1"]}
        ],
        k=5,
    )
    local = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0))
    remote = RetrievalService(
        export_dir, ServiceConfig(tf_serving=standins[protocol], reload_interval_s=0)
    )
    assert remote.metadata()["query_tower"]["source"] == protocol
    ours, theirs = local.retrieve(request), remote.retrieve(request)
    assert [i["item_id"] for i in ours["results"][0]["items"]] == [
        i["item_id"] for i in theirs["results"][0]["items"]
    ]
    remote.close()
    local.close()


def test_tf_serving_down_is_a_503(exported):
    _, export_dir = exported
    models = Models(os.path.join(export_dir, "query_tower"), "query_tower")
    # Loaded (and warmed up) before it serves, as TF Serving loads its models: the stand-in
    # would load on the service's first call, which took longer than its 1 s timeout once
    # on a loaded CI machine.
    models.signature("query_tower", None, "serving_default")
    server, url, _ = start_grpc(models)
    service = RetrievalService(
        export_dir, ServiceConfig(tf_serving=url, reload_interval_s=0, tf_serving_timeout_s=1)
    )
    server.stop(grace=None)
    request = RetrieveRequest(queries=[{"user_id": "u1", "features": {"segment": []}}], k=3)
    with pytest.raises(RequestError) as error:
        service.retrieve(request)
    assert error.value.status == 503 and "UNAVAILABLE" in str(error.value)
    service.close()
