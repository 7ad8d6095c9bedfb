"""The retrieval service over HTTP: answers, validation errors, metadata."""

import json

import pytest
from conftest import get_json, post_json

from serving.retrieval_service import RetrievalService
from serving.retriever import Retriever
from serving.service import run_in_thread
from serving.service_config import ServiceConfig

U1 = {"user_id": "u1", "history": ["i1", "i4"], "features": {"segment": "s1"}}


@pytest.fixture(scope="module")
def service_url(exported):
    _, export_dir = exported
    service = RetrievalService(export_dir, ServiceConfig(max_batch=4, max_list=5, max_k=20))
    server = run_in_thread(service)
    yield server.url
    server.stop()
    service.close()


def test_retrieve_matches_the_library_retriever(exported, service_url):
    _, export_dir = exported
    status, body = post_json(f"{service_url}/v1/retrieve", {"queries": [U1], "k": 5})
    assert status == 200 and body["model_version"] == 1
    items = body["results"][0]["items"]
    expected = Retriever(export_dir).retrieve(
        {"user_id": "u1", "history": ["i1", "i4"], "user.segment": "s1"}, k=5
    )
    assert [(i["item_id"], pytest.approx(i["score"], rel=1e-5)) for i in items] == [
        (item, score) for item, score in expected
    ]


def test_batch_equals_single_requests_and_exclusions_hold(service_url):
    other = {"user_id": "u2", "features": {"segment": ["s0"]}, "exclude": ["i0", "i3"]}
    _, batch = post_json(f"{service_url}/v1/retrieve", {"queries": [U1, other], "k": 4})
    _, single = post_json(f"{service_url}/v1/retrieve", {"queries": [other], "k": 4})
    # the same items; scores equal up to float32 rounding of a batched matmul
    batched, alone = batch["results"][1]["items"], single["results"][0]["items"]
    assert [i["item_id"] for i in batched] == [i["item_id"] for i in alone]
    assert [i["score"] for i in batched] == pytest.approx([i["score"] for i in alone], rel=1e-5)
    assert not {"i0", "i3"} & {i["item_id"] for i in single["results"][0]["items"]}


def test_unknown_user_and_items_fall_back_to_oov(service_url, exported):
    def query(user_id, history):
        return {"user_id": user_id, "history": history, "features": {"segment": "s9"}}

    queries = [query("nobody", ["no-such-item"]), query("stranger", ["other-unknown"])]
    queries.append(query("u1", ["no-such-item"]))  # a known user, same unknown rest
    status, body = post_json(f"{service_url}/v1/retrieve", {"queries": queries, "k": 5})
    assert status == 200
    nobody, stranger, known = (
        [(i["item_id"], i["score"]) for i in r["items"]] for r in body["results"]
    )
    assert len(nobody) == 5
    # Both unknown users (and their unknown items and token) hit the same OOV buckets:
    # the same embedding, so the same items with the same scores, unlike the known user.
    assert nobody == stranger
    assert [s for _, s in nobody] != pytest.approx([s for _, s in known], abs=1e-4)
    # And it is the embedding the exported model gives an unknown user, not an error path.
    retriever = Retriever(exported[1])
    expected = retriever.retrieve({"user_id": "x", "history": ["y"], "user.segment": "s9"}, k=5)
    assert [i for i, _ in nobody] == [i for i, _ in expected]
    assert [s for _, s in nobody] == pytest.approx([s for _, s in expected], rel=1e-5)


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"queries": [{"user_id": 7, "features": {"segment": "s1"}}]}, 422, "user_id"),
        ({"queries": [{"user_id": "u1", "features": {"segment": 1}}]}, 422, "segment"),
        (
            {"queries": [{"user_id": "u1", "history": "i1", "features": {"segment": []}}]},
            422,
            "history",
        ),
        ({"queries": [{"user_id": "u1"}]}, 422, "missing ['segment']"),
        (
            {"queries": [{"user_id": "u1", "features": {"segment": [], "age": "3"}}]},
            422,
            "unknown ['age']",
        ),
        ({"queries": [{"features": {"segment": []}}]}, 422, "user_id: Field required"),
        ({"queries": [U1], "k": 0}, 422, "k: must be in [1, 20], got 0"),
        ({"queries": [U1], "k": 21}, 422, "k: must be in [1, 20]"),
        ({"queries": [U1], "k": "5"}, 422, "k"),
        ({"queries": [U1] * 5}, 413, "5 queries, at most 4"),
        ({"queries": []}, 422, "queries"),
        ({"queries": [U1], "user": "u1"}, 422, "user: Extra inputs"),
        ({"queries": [{**U1, "history": ["i1"] * 6}]}, 422, "history: 6 entries, at most 5"),
        ([U1], 422, "valid dictionary"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(service_url, body, status, message):
    got, answer = post_json(f"{service_url}/v1/retrieve", body)
    assert got == status and message in answer["detail"], answer


def test_malformed_json_is_a_400(service_url):
    status, answer = post_json(f"{service_url}/v1/retrieve", None, raw=b'{"queries": [')
    assert status == 400 and "malformed JSON" in answer["detail"]


def test_oversized_body_is_a_413_before_parsing(exported):
    _, export_dir = exported
    service = RetrievalService(export_dir, ServiceConfig(max_body_bytes=100, reload_interval_s=0))
    server = run_in_thread(service)
    try:
        status, answer = post_json(f"{server.url}/v1/retrieve", {"queries": [U1] * 3})
        assert status == 413 and "at most 100" in answer["detail"]
    finally:
        server.stop()
        service.close()


def test_health_and_metadata(service_url):
    assert get_json(f"{service_url}/healthz") == (200, {"status": "ok", "model_version": 1})
    status, metadata = get_json(f"{service_url}/v1/metadata")
    assert status == 200
    assert metadata["user_features"] == ["segment"]
    assert metadata["items"] == {"count": 30, "dim": 8}
    assert metadata["index"]["kind"] == "brute_force"
    assert metadata["limits"] == {"max_k": 20, "max_batch": 4, "max_list": 5}
    assert metadata["query_tower"]["source"] == "in-process"
    json.dumps(metadata)  # plain JSON all the way down


def test_missing_export_fails_at_start(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_manifest.json"):
        RetrievalService(str(tmp_path))
