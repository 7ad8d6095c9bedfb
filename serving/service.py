"""`twotower serve EXPORT_DIR`: the retrieval service over HTTP/JSON (FastAPI + uvicorn).

  POST /v1/retrieve   {"queries": [{"user_id", "history", "features", "exclude"}], "k"}
                      -> {"model_version", "results": [{"user_id", "items": [{item_id, score}]}]}
  GET  /healthz       200 {"status": "ok", "model_version"} once a version is loaded;
                      {"status": "degraded", "reason"} while a newer version is refused
  GET  /v1/metadata   version, inputs, user features, index, limits, reload counters
  GET  /openapi.json  the request schema (no /docs page: it loads scripts from a CDN,
                      which clusters without egress cannot reach)

Why FastAPI: request bodies are validated by pydantic models into precise 4xx messages
(field path + reason) without hand-written checks, the OpenAPI schema comes for free at
/docs, and uvicorn is a production ASGI server. The endpoints are plain `def`s, which
FastAPI runs on a thread pool: the work (TensorFlow, ScaNN, numpy) releases the GIL, so
concurrent requests overlap.
"""

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.api import RetrieveRequest
from serving.retrieval_service import RequestError, RetrievalService
from serving.service_config import ServiceConfig


def _validation_message(error: RequestValidationError) -> tuple[int, str]:
    """(status, one message naming each field at fault); malformed JSON is a 400."""
    parts = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            reason = item.get("ctx", {}).get("error", item.get("msg"))
            return 400, f"body: malformed JSON at character {item['loc'][-1]}: {reason}"
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {item.get('msg')}")
    return 422, "; ".join(parts)


class _BodyLimit:
    """Answers 413 to a body over the limit: a declared Content-Length before anything
    reads it, and any body (chunked transfer encoding has no length) as soon as the bytes
    read pass the limit, so at most the limit is ever held.

    Starlette has no body limit of its own; uvicorn limits only the header size.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self._max_bytes:
            message = {"detail": f"body: {int(length)} bytes, at most {self._max_bytes}"}
            await JSONResponse(message, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    # FastAPI passes an HTTPException from the body read through as is.
                    raise HTTPException(
                        413,
                        f"body: more than {self._max_bytes} bytes (chunked), at most "
                        f"{self._max_bytes}",
                    )
            return message

        await self._app(scope, counted, send)


def create_app(service: RetrievalService) -> FastAPI:
    """The HTTP app over `service`; it starts and stops the service's reload watcher."""

    async def lifespan(app: FastAPI):
        service.start()
        yield
        service.stop()

    app = FastAPI(
        title="twotower retrieval",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI's scripts come from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.add_middleware(_BodyLimit, max_bytes=service.config.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(error)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(RequestError)
    async def refused(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.post("/v1/retrieve")
    def retrieve(request: RetrieveRequest) -> JSONResponse:
        return JSONResponse(service.retrieve(request))

    @app.get("/healthz")
    def healthz() -> dict:
        return service.health()

    @app.get("/v1/metadata")
    def metadata() -> dict:
        return service.metadata()

    return app


def serve(export_dir: str, config: ServiceConfig | None = None, log_level: str = "info") -> None:
    """Loads the export and serves it on `config.host:config.port` until interrupted.

    Raises:
      FileNotFoundError: no export manifest in `export_dir`.
      ValueError: a bad `tf_serving` address or an inconsistent export.
    """
    config = config or ServiceConfig()
    service = RetrievalService(export_dir, config)
    try:
        uvicorn.run(create_app(service), host=config.host, port=config.port, log_level=log_level)
    finally:
        service.close()


@dataclass
class RunningServer:
    """A service running on a background thread (tests, benchmarks)."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def run_in_thread(
    service: RetrievalService, host: str = "127.0.0.1", port: int = 0
) -> RunningServer:
    """Starts the app on `host:port` (0: a free port) in a thread; returns once it listens."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says TCP; without it every keep-alive response waits 40 ms for
    # a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the retrieval service did not start on {host}:{port}")
        time.sleep(0.01)
    bound_host, bound_port = sock.getsockname()[:2]
    return RunningServer(f"http://{bound_host}:{bound_port}", server, thread)
