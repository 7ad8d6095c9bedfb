"""UMA²'s negative samples debias network (NSDN): two propensity heads and IPW weights.

Entire→Recall predicts p1 = P(recalled | user, item); Recall→Exposure predicts
p2 = P(exposed | recalled, user, item). A negative from Space B (recalled, not exposed)
is weighted 1/p1, from Space A (exposed, not clicked) 1/(p1·p2), from Space C 1.
"""

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

_EPSILON = 1e-6


@tf.keras.utils.register_keras_serializable(package="twotower")
class PropensityHead(tf.keras.layers.Layer):
    """An MLP over [u, v, u·v, item features] -> one logit: P(event | user, item)."""

    def __init__(self, hidden_units: Sequence[int] = (64,), **kwargs: Any):
        super().__init__(**kwargs)
        self._hidden_units = list(hidden_units)
        self._layers = [tf.keras.layers.Dense(u, activation="relu") for u in hidden_units]
        self._layers.append(tf.keras.layers.Dense(1))

    def _first_layer(
        self, users: tf.Tensor, items: tf.Tensor, item_features: tf.Tensor | None
    ) -> tf.Tensor:
        """The first Dense layer on [u, v, u·v, f], written as the sum of its kernel's row
        blocks applied to each part: u·W_u + v·W_v + (u∘v)·W_uv + f·W_f + b. Each term is
        computed at its own shape and they meet by broadcasting, so a user's term is
        computed once per row, not once per (row, candidate) pair, and the pairs'
        `[..., 3d + f]` input is never built (one user row meets 10 candidates a step in
        UMA², whose heads were the largest part of its step)."""
        first = self._layers[0]
        dim = users.shape[-1]
        if not first.built:  # in its own name scope, as its call would build it
            width = 3 * dim + (item_features.shape[-1] if item_features is not None else 0)
            with tf.name_scope(first.name):
                first.build(tf.TensorShape([None, width]))
        kernel = tf.cast(first.kernel, self.compute_dtype)
        parts = [(users, kernel[:dim]), (items, kernel[dim : 2 * dim])]
        parts.append((users * items, kernel[2 * dim : 3 * dim]))
        if item_features is not None:
            parts.append((tf.cast(item_features, users.dtype), kernel[3 * dim :]))
        x = tf.cast(first.bias, self.compute_dtype)
        for inputs, block in parts:
            x = x + _project(inputs, block)
        return first.activation(x)

    def call(
        self, users: tf.Tensor, items: tf.Tensor, item_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Args: users `[..., dim]`, items `[..., dim]` (broadcastable), item_features
        `[..., f]` (broadcastable to their shape but the last axis) or None.
        Returns `[...]` logits."""
        # Under mixed precision Keras casts only the first input to float16.
        users, items = tf.cast(users, self.compute_dtype), tf.cast(items, self.compute_dtype)
        x = self._first_layer(users, items, item_features)  # u∘v: the broadcast shape
        for layer in self._layers[1:]:
            x = layer(x)
        return tf.cast(tf.squeeze(x, -1), tf.float32)  # the losses and weights are float32

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden_units": self._hidden_units}


def _project(inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`[..., d]` @ `[d, h]` -> `[..., h]`, as one 2-D MatMul (Dense's Tensordot)."""
    flat = tf.matmul(tf.reshape(inputs, [-1, tf.shape(inputs)[-1]]), kernel)
    return tf.reshape(flat, tf.concat([tf.shape(inputs)[:-1], tf.shape(kernel)[-1:]], 0))


def ipw_weights(
    p1: tf.Tensor,
    p2: tf.Tensor | None,
    max_weight: float,
    valid: tf.Tensor,
    self_normalize: bool = False,
) -> tf.Tensor:
    """Inverse-propensity weights, clipped to [1, max_weight], without gradient.

    Args:
      p1: `[batch, n]` P(recalled) of each negative.
      p2: `[batch, n]` P(exposed | recalled), or None for Space B (weight 1/p1).
      max_weight: upper clip; the lower clip is 1 (a negative never counts less).
      valid: `[batch, n]` bool, which slots are real negatives.
      self_normalize: divide by the mean weight over the valid slots of the batch.

    Returns:
      `[batch, n]` weights; 0 where not valid.
    """
    propensity = tf.maximum(p1, _EPSILON)
    if p2 is not None:
        propensity *= tf.maximum(p2, _EPSILON)
    weights = tf.clip_by_value(1.0 / propensity, 1.0, max_weight)
    mask = tf.cast(valid, weights.dtype)
    if self_normalize:
        mean = tf.reduce_sum(weights * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
        weights = weights / mean
    return tf.stop_gradient(weights * mask)
