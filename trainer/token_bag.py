"""TokenBagEmbedding: the mean embedding of a bag of string tokens ("" pads)."""

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

PAD = ""


@tf.keras.utils.register_keras_serializable(package="twotower")
class TokenBagEmbedding(tf.keras.layers.Layer):
    """Looks string tokens up in a vocabulary and averages their embeddings.

    Index 0 is the padding token "" (masked out of the mean), indices 1 … num_oov_buckets
    the out-of-vocabulary buckets (a token hashes into one), so unseen ids still get an
    embedding, as the dataset's manifest documents (docs/dataset.md). The
    vocabulary lives in the graph, so an exported tower takes raw strings.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        embedding_dim: int,
        num_oov_buckets: int = 1,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        if num_oov_buckets < 1:
            raise ValueError(f"num_oov_buckets must be positive, got {num_oov_buckets}")
        self._num_oov_buckets = num_oov_buckets
        self._vocabulary = [token for token in vocabulary if token != PAD]
        self._embedding_dim = embedding_dim
        self._lookup = tf.keras.layers.StringLookup(
            vocabulary=self._vocabulary or ["<none>"],
            mask_token=PAD,
            num_oov_indices=num_oov_buckets,
        )
        self._embedding = tf.keras.layers.Embedding(
            self._lookup.vocabulary_size(), embedding_dim, name="embedding"
        )

    def call(self, tokens: tf.Tensor) -> tf.Tensor:
        """Embeds token bags.

        Args:
          tokens: `[batch_size]` or `[batch_size, n]` strings, "" as padding.

        Returns:
          `[batch_size, embedding_dim]` mean embeddings (zeros for an empty bag).
        """
        if tokens.shape.rank == 1:
            tokens = tf.expand_dims(tokens, 1)
        ids = self._lookup(tokens)
        mask = tf.cast(ids > 0, self.compute_dtype)[..., tf.newaxis]
        total = tf.reduce_sum(self._embedding(ids) * mask, axis=1)
        return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary": self._vocabulary,
            "embedding_dim": self._embedding_dim,
            "num_oov_buckets": self._num_oov_buckets,
        }


def mlp(hidden_units: Sequence[int], output_dim: int, name: str) -> tf.keras.Sequential:
    """ReLU hidden layers and a linear output layer."""
    layers = [tf.keras.layers.Dense(units, activation="relu") for units in hidden_units]
    layers.append(tf.keras.layers.Dense(output_dim))
    return tf.keras.Sequential(layers, name=name)
