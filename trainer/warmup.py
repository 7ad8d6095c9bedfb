"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`.

TF Serving started with `--enable_model_warmup` replays these PredictionLog records
through a new version before it serves it, so the first real requests do not pay for
graph initialisation (table initialisers, kernel selection).
"""

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from common import contracts

# TF Serving reads at most 1000 warm-up records.
MAX_RECORDS = 1000


def _tensor_proto(values: np.ndarray) -> Any:
    """Float inputs (numeric, vector features) as float32, everything else as strings."""
    values = np.asarray(values)
    dtype = tf.float32 if values.dtype.kind == "f" else tf.string
    return tf.make_tensor_proto(values, dtype=dtype)


def write_warmup_requests(
    saved_model_dir: str,
    features: Mapping[str, np.ndarray],
    model_name: str,
    num_requests: int = 8,
    batch_size: int = 32,
) -> dict[str, int]:
    """Writes warm-up records from real feature rows (e.g. eval users).

    The first `num_requests - 1` records hold one user each (the serving case), the last
    a batch of up to `batch_size` users, so both shapes are traced and warm.

    Args:
      saved_model_dir: the version folder; `assets.extra/` is created in it.
      features: signature inputs, `[num_users]` / `[num_users, n]` bytes.
      model_name: TF Serving's model name, written into each request.
      num_requests: records to write, 1..1000.
      batch_size: users in the batched record.

    Returns:
      {"records": written, "batch_size": users in the batched record}.

    Raises:
      ValueError: `num_requests` out of range or `features` empty.
    """
    if not 1 <= num_requests <= MAX_RECORDS:
        raise ValueError(f"num_requests must be in [1, {MAX_RECORDS}], got {num_requests}")
    num_users = len(next(iter(features.values()), []))
    if num_users == 0:
        raise ValueError("warm-up needs at least one user's features")
    rows = [slice(i % num_users, i % num_users + 1) for i in range(num_requests - 1)]
    rows.append(slice(0, min(batch_size, num_users)))
    batches = [{name: np.asarray(v)[r] for name, v in features.items()} for r in rows]
    path = os.path.join(saved_model_dir, contracts.WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=contracts.SIGNATURE),
                inputs={n: _tensor_proto(v) for n, v in batch.items()},
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return {"records": len(batches), "batch_size": min(batch_size, num_users)}


def read_warmup_requests(saved_model_dir: str) -> list[predict_pb2.PredictRequest]:
    """The PredictRequests of a version's warm-up file, in order."""
    requests = []
    for record in tf.data.TFRecordDataset(os.path.join(saved_model_dir, contracts.WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests
