"""Test-only stand-ins for TF Serving: its gRPC PredictionService and its REST predict API.

No TF Serving binary can be installed here, so the client paths are tested against these:
the gRPC one is the official `tensorflow_serving.apis` servicer base class, serving the
exported SavedModel versions from a model base path the way TF Serving lays them out. Like
TF Serving with `--enable_model_warmup`, each version replays its warm-up file on load.
They are not a serving solution: production runs the real `tensorflow/serving` image.
"""

import json
import os
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from trainer.warmup import read_warmup_requests


class ServableNotFound(LookupError):
    pass


class Models:
    """Versions of one model under `base_path/<version>/`, loaded on first use."""

    def __init__(self, base_path: str, name: str, versions: set[int] | None = None):
        self.base_path = base_path
        self.name = name
        self.allowed = versions  # None: every version on disk
        self.warmed_up: dict[int, int] = {}
        self._loaded: dict[int, object] = {}
        self._lock = threading.Lock()

    def _available(self) -> list[int]:
        found = [int(v) for v in os.listdir(self.base_path) if v.isdigit()]
        return sorted(v for v in found if self.allowed is None or v in self.allowed)

    def signature(self, name: str, version: int | None, signature_name: str):
        if name != self.name:
            raise ServableNotFound(f"Servable not found for request: Latest({name})")
        available = self._available()
        version = version if version is not None else (available[-1] if available else None)
        if version not in available:
            raise ServableNotFound(f"Servable not found for request: Specific({name}, {version})")
        with self._lock:
            if version not in self._loaded:
                path = os.path.join(self.base_path, str(version))
                model = tf.saved_model.load(path)
                default = model.signatures["serving_default"]
                for request in read_warmup_requests(path):
                    default(**{k: tf.make_ndarray(t) for k, t in request.inputs.items()})
                self.warmed_up[version] = len(read_warmup_requests(path))
                self._loaded[version] = model
        return version, self._loaded[version].signatures[signature_name or "serving_default"]


class PredictionServiceStandIn(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`Predict` over `Models`; errors carry TF Serving's gRPC status codes."""

    def __init__(self, models: Models):
        self.models = models
        self.calls = 0

    def Predict(self, request, context):  # noqa: N802  (the gRPC method name)
        self.calls += 1
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        try:
            version, signature = self.models.signature(spec.name, version, spec.signature_name)
            inputs = {name: tf.make_ndarray(t) for name, t in request.inputs.items()}
            outputs = signature(**inputs)
        except ServableNotFound as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def start_grpc(models: Models) -> tuple[grpc.Server, str, PredictionServiceStandIn]:
    """(server, "grpc://127.0.0.1:port", servicer) on a free loopback port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = PredictionServiceStandIn(models)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"grpc://127.0.0.1:{port}", servicer


_PREDICT = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")


def start_rest(models: Models) -> tuple[ThreadingHTTPServer, str]:
    """(server, "http://127.0.0.1:port"): TF Serving's columnar REST predict API."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802
            match = _PREDICT.match(self.path)
            if not match:
                return self._reply(404, {"error": f"Malformed request: POST {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            version = int(match.group(2)) if match.group(2) else None
            try:
                _, signature = models.signature(
                    match.group(1), version, body.get("signature_name", "")
                )
                inputs = {
                    k: tf.constant(np.array(v, dtype=object)) for k, v in body["inputs"].items()
                }
                outputs = {k: v.numpy().tolist() for k, v in signature(**inputs).items()}
            except ServableNotFound as e:
                return self._reply(404, {"error": str(e)})
            except (KeyError, TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
                return self._reply(400, {"error": str(e)})
            # One named output: TF Serving omits its name.
            self._reply(
                200, {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
