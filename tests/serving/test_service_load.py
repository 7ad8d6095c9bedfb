"""A live local instance under bounded concurrent load, with a new version mid-load."""

import http.client
import json
import os
import threading
import time
import urllib.parse

from tf_serving_standin import Models, start_grpc

from serving.retrieval_service import RetrievalService
from serving.service import run_in_thread
from serving.service_config import ServiceConfig
from tests.conftest import export

CLIENTS = 8  # concurrent connections
MAX_REQUESTS_PER_CLIENT = 400  # hard bound on the traffic
DEADLINE_S = 60
BODY = json.dumps(
    {
        "queries": [{"user_id": "u3", "history": ["i2"], "features": {"segment": "s1"}}],
        "k": 5,
    }
)


class Load:
    """CLIENTS threads posting /v1/retrieve over keep-alive connections until stopped."""

    def __init__(self, url: str):
        self._address = urllib.parse.urlparse(url).netloc
        self.stop = threading.Event()
        self.results: list[list[tuple[int, int | None]]] = [[] for _ in range(CLIENTS)]
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]

    def _client(self, i: int) -> None:
        connection = http.client.HTTPConnection(self._address, timeout=30)
        deadline = time.monotonic() + DEADLINE_S
        headers = {"Content-Type": "application/json"}
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            try:
                connection.request("POST", "/v1/retrieve", BODY, headers)
                response = connection.getresponse()
                body = json.loads(response.read())
                version = body.get("model_version")
                ok = response.status == 200 and len(body["results"][0]["items"]) == 5
                self.results[i].append((response.status if ok else -1, version))
            except (OSError, http.client.HTTPException, ValueError):
                self.results[i].append((-1, None))
                connection = http.client.HTTPConnection(self._address, timeout=30)
        connection.close()

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()

    def count(self) -> int:
        return sum(len(r) for r in self.results)

    def wait_for(self, more: int) -> None:
        target = self.count() + more
        deadline = time.monotonic() + DEADLINE_S
        while self.count() < target and time.monotonic() < deadline:
            time.sleep(0.01)


def test_reload_under_load_loses_no_request(fresh_run):
    export(fresh_run)
    export_dir = os.path.join(fresh_run, "export")
    service = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0.05))
    server = run_in_thread(service)
    try:
        with Load(server.url) as load:
            load.wait_for(200)
            export(fresh_run)  # version 2, published while requests are in flight
            deadline = time.monotonic() + DEADLINE_S
            while service.version != 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            load.wait_for(200)
    finally:
        server.stop()
        service.close()
    results = [r for client in load.results for r in client]
    assert len(results) >= 400
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:5]
    assert {version for _, version in results} == {1, 2}
    assert service.reloads == 1 and service.reload_errors == 0
    for client in load.results:  # a client never goes back to the old version
        versions = [v for _, v in client]
        assert versions == sorted(versions)


def test_reload_waits_until_tf_serving_has_the_version(fresh_run):
    export(fresh_run)
    export_dir = os.path.join(fresh_run, "export")
    models = Models(os.path.join(export_dir, "query_tower"), "query_tower", versions={1})
    grpc_server, grpc_url, _ = start_grpc(models)
    service = RetrievalService(
        export_dir, ServiceConfig(tf_serving=grpc_url, reload_interval_s=0.05)
    )
    server = run_in_thread(service)
    try:
        with Load(server.url) as load:
            load.wait_for(50)
            export(fresh_run)  # on disk, but "TF Serving" has not loaded it yet
            deadline = time.monotonic() + DEADLINE_S
            while service.reload_errors < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert service.version == 1  # the probe failed; version 1 kept serving
            models.allowed = {1, 2}  # TF Serving loads version 2
            while service.version != 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            load.wait_for(50)
    finally:
        server.stop()
        service.close()
        grpc_server.stop(grace=None)
    results = [r for client in load.results for r in client]
    assert all(status == 200 for status, _ in results)
    assert {version for _, version in results} == {1, 2}
