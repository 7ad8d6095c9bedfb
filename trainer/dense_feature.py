"""DenseFeature: a numeric or vector feature as a tower input; NaN marks a missing value."""

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from common.contracts import NUMERIC


@tf.keras.utils.register_keras_serializable(package="twotower")
class DenseFeature(tf.keras.layers.Layer):
    """`[batch, dim]` raw floats -> `[batch, output_size]` tower input.

    A numeric value is transformed as preprocessing described it in the manifest
    (`log1p` when `log`, then standardised by the training split's mean and std) and,
    with `boundaries`, also embedded by its quantile bucket. A vector (or a text
    embedding) passes as it is. A missing value -- NaN in any position, as the parser
    fills an absent feature and as serving sends an absent one -- becomes a learned
    vector of its own, and a missing numeric value its own bucket. Everything here is a
    standard TF op, so an exported tower keeps loading in stock TF Serving.
    """

    def __init__(
        self,
        kind: str,
        dim: int,
        mean: float = 0.0,
        std: float = 1.0,
        log: bool = False,
        boundaries: Sequence[float] = (),
        embedding_dim: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if dim < 1:
            raise ValueError(f"{self.name}: dim must be positive, got {dim}")
        if boundaries and embedding_dim < 1:
            raise ValueError(f"{self.name}: bucket boundaries need an embedding_dim")
        self._kind = kind
        self._dim = dim
        self._mean = float(mean)
        self._std = float(std) if std and std > 0 else 1.0
        self._log = bool(log) and kind == NUMERIC
        self._boundaries = [float(b) for b in boundaries] if kind == NUMERIC else []
        self._embedding_dim = embedding_dim
        # Buckets 0 … len(boundaries): the value's; one more: missing.
        self._buckets = (
            tf.keras.layers.Embedding(len(self._boundaries) + 2, embedding_dim, name="buckets")
            if self._boundaries
            else None
        )

    def build(self, input_shape: Any) -> None:
        # Made here, not in __init__: inside build the weight is named under the layer.
        self._missing = self.add_weight(
            name="missing", shape=[self._dim], initializer="zeros", trainable=True
        )
        super().build(input_shape)

    @property
    def output_size(self) -> int:
        return self._dim + (self._embedding_dim if self._buckets is not None else 0)

    def call(self, values: tf.Tensor) -> tf.Tensor:
        values = tf.reshape(tf.cast(values, tf.float32), [-1, self._dim])
        missing = tf.math.is_nan(values)
        row_missing = tf.reduce_any(missing, axis=1, keepdims=True)
        # Zeros in place of NaN before any arithmetic: gradients never see a NaN.
        x = tf.where(missing, tf.zeros_like(values), values)
        if self._log:
            x = tf.math.log1p(tf.maximum(x, -0.999999))
        transformed = x  # the value the bucket boundaries are in
        x = (x - self._mean) / self._std
        x = tf.where(
            row_missing, tf.broadcast_to(tf.cast(self._missing, tf.float32), tf.shape(x)), x
        )
        if self._buckets is None:
            return tf.cast(x, self.compute_dtype)
        bucket = tf.raw_ops.Bucketize(input=transformed[:, 0], boundaries=self._boundaries)
        bucket = tf.where(row_missing[:, 0], len(self._boundaries) + 1, bucket)
        embedded = self._buckets(bucket)
        return tf.concat([tf.cast(x, self.compute_dtype), embedded], axis=1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kind": self._kind,
            "dim": self._dim,
            "mean": self._mean,
            "std": self._std,
            "log": self._log,
            "boundaries": self._boundaries,
            "embedding_dim": self._embedding_dim,
        }


def dense_layer(name: str, spec: dict[str, Any], embedding_dim: int) -> DenseFeature:
    """The layer for one manifest `features` entry (numeric, vector or text)."""
    return DenseFeature(
        spec["kind"],
        int(spec.get("dim", 1)),
        mean=spec.get("mean", 0.0),
        std=spec.get("std", 1.0),
        log=spec.get("log", False),
        boundaries=spec.get("boundaries", ()),
        embedding_dim=embedding_dim,
        name=name,
    )
