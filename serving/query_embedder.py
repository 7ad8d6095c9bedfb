"""Query embeddings from the exported query tower: in process, or from TF Serving.

  SavedModelEmbedder   loads `export/query_tower/<version>/` into this process
  GrpcEmbedder         TF Serving's PredictionService over gRPC (`grpc://host:8500`)
  RestEmbedder         TF Serving's REST predict API (`http://host:8501`)

Each asks for one model version explicitly, so the embeddings always come from the
version the item index was built with, even while TF Serving holds two versions.
"""

import json
import urllib.error
import urllib.request
from collections.abc import Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from common.contracts import EMBEDDING_OUTPUT as OUTPUT
from common.contracts import MODEL_NAME, SIGNATURE


class EmbedderError(RuntimeError):
    """The query tower could not embed a batch (TF Serving down, wrong version, ...)."""


def predict_request(
    batch: Mapping[str, np.ndarray],
    model_name: str,
    version: int | None = None,
    signature_name: str = SIGNATURE,
) -> predict_pb2.PredictRequest:
    """A PredictRequest for a feature batch (the warm-up file holds these too): DT_FLOAT
    tensors for the float inputs (numeric and vector features), DT_STRING for the rest."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    for name, values in batch.items():
        values = np.asarray(values)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=_dtype(values)))
    return request


def _dtype(values: np.ndarray) -> tf.DType:
    """float32 for `feature_batch`'s float arrays, string for its byte arrays."""
    return tf.float32 if values.dtype.kind == "f" else tf.string


def _json(values: np.ndarray) -> list:
    """A batch input as JSON values: floats as numbers (a missing value is NaN, written as
    the bare token `NaN`, which TF Serving's REST API accepts: its docs' "JSON
    conformance"), bytes as str."""
    if values.dtype.kind == "f":
        return values.astype(np.float64).tolist()
    text = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])
    return text(values).tolist()


class QueryEmbedder:
    """Feature batch (`serving.query_features.feature_batch`) -> the signature's outputs:
    "embedding" `[batch_size, dim]` and, for a Multi-CLRec export, "intentions"
    `[batch_size, H, dim]`."""

    target = "base"

    def outputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def embed(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """`[batch_size, dim]` the query embeddings alone."""
        return self.outputs(batch)[OUTPUT]

    def close(self) -> None:
        """Releases connections; the embedder is not used afterwards."""


class SavedModelEmbedder(QueryEmbedder):
    """Runs the SavedModel's `serving_default` in this process."""

    target = "in-process"

    def __init__(self, saved_model_dir: str, signature_name: str = SIGNATURE):
        self._model = tf.saved_model.load(saved_model_dir)
        self._signature = self._model.signatures[signature_name]
        # Each input with the dtype the signature declares (string, or float32 features).
        # Keyed by the TensorSpec's name: the argument names are sanitized ("user_age").
        specs = self._signature.structured_input_signature[1]
        self._dtypes = {spec.name or key: spec.dtype for key, spec in specs.items()}

    def outputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {}
        for name, values in batch.items():
            values = np.asarray(values)
            inputs[name] = tf.constant(values, dtype=self._dtypes.get(name) or _dtype(values))
        return {name: value.numpy() for name, value in self._signature(**inputs).items()}


class GrpcEmbedder(QueryEmbedder):
    """TF Serving over gRPC with `tensorflow-serving-api`'s PredictionService stub."""

    target = "grpc"

    def __init__(self, address: str, model_name: str, version: int, timeout_s: float = 5.0):
        self._address = address
        self._model_name = model_name
        self._version = version
        self._timeout_s = timeout_s
        self._channel = grpc.insecure_channel(address)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def outputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = predict_request(batch, self._model_name, self._version)
        try:
            response = self._stub.Predict(request, timeout=self._timeout_s)
        except grpc.RpcError as e:
            raise EmbedderError(
                f"TF Serving {self._address} {self._model_name}/{self._version}: "
                f"{e.code().name}: {e.details()}"
            ) from e
        return {
            name: tf.make_ndarray(tensor).astype(np.float32)
            for name, tensor in response.outputs.items()
        }

    def close(self) -> None:
        self._channel.close()


class RestEmbedder(QueryEmbedder):
    """TF Serving's REST API, columnar `inputs` request (floats as JSON numbers, `NaN`
    for a missing one: TF Serving's REST API accepts the token, strict JSON does not)."""

    target = "rest"

    def __init__(self, base_url: str, model_name: str, version: int, timeout_s: float = 5.0):
        self._url = f"{base_url.rstrip('/')}/v1/models/{model_name}/versions/{version}:predict"
        self._timeout_s = timeout_s

    def outputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {name: _json(np.asarray(v)) for name, v in batch.items()}
        body = json.dumps({"signature_name": SIGNATURE, "inputs": inputs}, allow_nan=True).encode()
        request = urllib.request.Request(
            self._url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                outputs = json.load(response)["outputs"]
        except urllib.error.HTTPError as e:
            raise EmbedderError(f"TF Serving {self._url}: HTTP {e.code}: {e.read()[:500]!r}") from e
        except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
            raise EmbedderError(f"TF Serving {self._url}: {e}") from e
        # One named output: TF Serving drops the name and sends the list itself.
        if not isinstance(outputs, dict):
            outputs = {OUTPUT: outputs}
        return {name: np.asarray(value, dtype=np.float32) for name, value in outputs.items()}


def make_embedder(
    tf_serving: str | None,
    saved_model_dir: str,
    version: int,
    model_name: str = MODEL_NAME,
    timeout_s: float = 5.0,
) -> QueryEmbedder:
    """The embedder for a `--tf-serving` value: None (in process), grpc:// or http(s)://.

    Raises:
      ValueError: an address of another scheme.
    """
    if not tf_serving:
        return SavedModelEmbedder(saved_model_dir)
    if tf_serving.startswith("grpc://"):
        return GrpcEmbedder(tf_serving.removeprefix("grpc://"), model_name, version, timeout_s)
    if tf_serving.startswith(("http://", "https://")):
        return RestEmbedder(tf_serving, model_name, version, timeout_s)
    raise ValueError(
        f"tf_serving: expected grpc://host:port or http://host:port, got {tf_serving!r}"
    )
