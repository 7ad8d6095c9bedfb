"""The service never serves a broken version and never answers a 5xx for a bad request
(issue 12): a non-finite version is refused with `degraded` health, start-up falls back
to an older good version, an unreachable TF Serving is one line, chunked bodies obey the
limit, lone surrogates are a 422, arbitrary JSON never gives a 5xx."""

import http.client
import json
import logging
import os
import shutil
import urllib.parse

import numpy as np
import pytest
from conftest import get_json, post_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import contracts
from serving.retrieval_service import RetrievalService, VersionRejected
from serving.service import run_in_thread
from serving.service_config import ServiceConfig
from tests.conftest import export
from twotower.cli import main

U1 = {"user_id": "u1", "history": ["i1"], "features": {"segment": "s1"}}


def _publish_poisoned_copy(export_dir, source, version):
    """Publishes `version` as a copy of `source` whose item embeddings hold a NaN (what a
    diverged model exported before the export refused it would look like)."""
    for part in (contracts.QUERY_TOWER_DIR, contracts.ITEMS_DIR):
        base = os.path.join(export_dir, part)
        shutil.copytree(os.path.join(base, str(source)), os.path.join(base, str(version)))
    items = os.path.join(export_dir, contracts.ITEMS_DIR, str(version))
    embeddings = np.load(os.path.join(items, contracts.ITEM_EMBEDDINGS))
    embeddings[3, 0] = np.nan
    np.save(os.path.join(items, contracts.ITEM_EMBEDDINGS), embeddings)
    with open(os.path.join(items, contracts.VERSION_MANIFEST)) as f:
        manifest = json.load(f)
    text = (
        json.dumps(manifest)
        .replace(f"/{source}/", f"/{version}/")
        .replace(
            f'"{contracts.QUERY_TOWER_DIR}/{source}"', f'"{contracts.QUERY_TOWER_DIR}/{version}"'
        )
    )
    manifest = {**json.loads(text), "version": version}
    for path in (
        os.path.join(items, contracts.VERSION_MANIFEST),
        os.path.join(export_dir, contracts.EXPORT_MANIFEST),
    ):
        with open(path, "w") as f:
            json.dump(manifest, f)


@pytest.fixture
def export_dir(fresh_run):
    export(fresh_run)
    return os.path.join(fresh_run, contracts.EXPORT_DIR)


def test_a_non_finite_version_is_not_swapped_in_and_health_says_degraded(fresh_run, export_dir):
    service = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0))
    server = run_in_thread(service)
    try:
        _publish_poisoned_copy(export_dir, source=1, version=2)
        with pytest.raises(VersionRejected, match="version 2: .*NaN or infinite item"):
            service.reload()
        status, health = get_json(f"{server.url}/healthz")
        assert status == 200 and health["status"] == "degraded"
        assert health["model_version"] == 1 and "version 2 rejected" in health["reason"]
        assert "version 2 rejected" in get_json(f"{server.url}/v1/metadata")[1]["degraded"]
        status, body = post_json(f"{server.url}/v1/retrieve", {"queries": [U1], "k": 3})
        assert status == 200 and body["model_version"] == 1
        assert service.reload() is False  # the same rejected version is not loaded again
        export(fresh_run)  # a good version 3
        assert service.reload() is True and service.version == 3
        assert get_json(f"{server.url}/healthz")[1] == {"status": "ok", "model_version": 3}
    finally:
        server.stop()
        service.close()


def test_start_up_falls_back_to_the_newest_good_version(export_dir, caplog):
    _publish_poisoned_copy(export_dir, source=1, version=2)
    with caplog.at_level(logging.WARNING, logger="twotower.serving"):
        service = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0))
    try:
        assert service.version == 1
        assert service.health()["status"] == "degraded"
        assert "serving version 1 instead" in caplog.text
    finally:
        service.close()


def test_a_pinned_bad_version_fails_at_start_with_one_line(export_dir, capsys):
    _publish_poisoned_copy(export_dir, source=1, version=2)
    with pytest.raises(VersionRejected):
        RetrievalService(export_dir, ServiceConfig(version=2))
    assert main(["serve", export_dir, "--version=2", "--port=0"]) == 1
    err = capsys.readouterr().err
    assert "NaN or infinite item embeddings" in err and "Traceback" not in err


def test_an_unreachable_tf_serving_is_one_line_at_start(export_dir, capsys):
    code = main(
        ["serve", export_dir, "--tf-serving=grpc://127.0.0.1:9", "--tf-serving-timeout-s=0.5"]
    )
    err = capsys.readouterr().err
    assert code == 138
    assert "twotower serve: retryable error: query tower backend unavailable" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def small_limit_url(exported):
    _, export_dir = exported
    service = RetrievalService(export_dir, ServiceConfig(max_body_bytes=2000, reload_interval_s=0))
    server = run_in_thread(service)
    yield server.url
    server.stop()
    service.close()


def test_the_body_limit_holds_for_chunked_bodies(small_limit_url):
    address = urllib.parse.urlparse(small_limit_url).netloc
    connection = http.client.HTTPConnection(address, timeout=30)
    sent = {"bytes": 0}

    def chunks():  # 50 MB offered in 64 KiB chunks, no Content-Length
        for _ in range(800):
            sent["bytes"] += 65536
            yield b" " * 65536

    try:
        connection.request(
            "POST",
            "/v1/retrieve",
            body=chunks(),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server dropped the connection instead of answering 413")
    finally:
        connection.close()
    assert response.status == 413 and "at most 2000" in answer["detail"]


def test_a_lone_surrogate_is_a_422_naming_the_field(small_limit_url):
    raw = b'{"queries": [{"user_id": "\\ud800", "features": {"segment": "s1"}}]}'
    status, answer = post_json(f"{small_limit_url}/v1/retrieve", None, raw=raw)
    assert status == 422 and "user_id" in answer["detail"] and "surrogate" in answer["detail"]
    raw = b'{"queries": [{"user_id": "u1", "features": {"segment": ["s1", "\\udfff"]}}]}'
    status, answer = post_json(f"{small_limit_url}/v1/retrieve", None, raw=raw)
    assert status == 422 and "segment" in answer["detail"]


def test_the_api_docs_page_is_off_and_the_schema_stays(small_limit_url):
    assert get_json(f"{small_limit_url}/openapi.json")[0] == 200
    with pytest.raises(Exception, match="404"):
        get_json(f"{small_limit_url}/docs")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ["user_id", "history", "features", "exclude", "other"]
QUERY = st.dictionaries(st.sampled_from(FIELDS), JSON | st.text(), max_size=5)
QUERY_LIKE = st.fixed_dictionaries(
    {"user_id": st.text(max_size=6)},
    optional={
        "history": st.lists(st.text(max_size=4), max_size=3),
        "features": st.dictionaries(
            st.sampled_from(["segment", "other"]),
            st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=3) | JSON,
            max_size=2,
        ),
        "exclude": st.lists(st.text(max_size=4), max_size=3),
    },
)
BODY = (
    JSON
    | st.fixed_dictionaries(
        {"queries": st.lists(QUERY | QUERY_LIKE, max_size=6)}, optional={"k": JSON}
    )
    | st.fixed_dictionaries({"queries": st.lists(QUERY_LIKE, min_size=1, max_size=3)})
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODY)
def test_no_json_body_gets_a_5xx(small_limit_url, body):
    status, answer = post_json(f"{small_limit_url}/v1/retrieve", body)
    assert status < 500, (body, answer)
    assert status == 200 or answer["detail"]
