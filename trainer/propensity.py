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

    def call(
        self, users: tf.Tensor, items: tf.Tensor, item_features: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Args: users `[..., dim]`, items `[..., dim]` (broadcastable), item_features
        `[..., f]` (broadcastable to their shape but the last axis) or None.
        Returns `[...]` logits."""
        # Under mixed precision Keras casts only the first input to float16.
        users, items = tf.cast(users, self.compute_dtype), tf.cast(items, self.compute_dtype)
        shape = tf.broadcast_dynamic_shape(tf.shape(users), tf.shape(items))
        users, items = tf.broadcast_to(users, shape), tf.broadcast_to(items, shape)
        parts = [users, items, users * items]
        if item_features is not None:  # shared candidates `[n, f]` meet rows `[b, n, d]`
            features_shape = tf.concat([shape[:-1], tf.shape(item_features)[-1:]], 0)
            parts.append(tf.broadcast_to(tf.cast(item_features, users.dtype), features_shape))
        x = tf.concat(parts, axis=-1)
        for layer in self._layers:
            x = layer(x)
        return tf.cast(tf.squeeze(x, -1), tf.float32)  # the losses and weights are float32

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden_units": self._hidden_units}


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
