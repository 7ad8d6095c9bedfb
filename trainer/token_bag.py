"""TokenBagEmbedding: the mean embedding of a bag of string tokens ("" pads)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.string_index import StringIndex

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
        initializer: str = "uniform",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        if num_oov_buckets < 1:
            raise ValueError(f"num_oov_buckets must be positive, got {num_oov_buckets}")
        self._num_oov_buckets = num_oov_buckets
        # numpy, not a list: Keras walks the Python containers a layer holds at every step.
        self._vocabulary = np.array([token for token in vocabulary if token != PAD], dtype=object)
        self._embedding_dim = embedding_dim
        self._lookup = StringIndex(self._vocabulary, num_oov_buckets, mask_token=PAD)
        self._initializer = initializer
        self._embedding = tf.keras.layers.Embedding(
            self._lookup.vocabulary_size(),
            embedding_dim,
            embeddings_initializer=initializer,
            name="embedding",
        )

    def vocabulary_size(self) -> int:
        """Rows of the embedding table: padding, OOV buckets, vocabulary."""
        return self._lookup.vocabulary_size()

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    def token_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """The rows of `tokens` in the embedding table (0: padding), same shape, int64."""
        return self._lookup(tokens)

    def embed_ids(self, ids: tf.Tensor) -> tf.Tensor:
        """`[batch_size, n]` rows (from `token_ids`) -> `[batch_size, embedding_dim]` means,
        padding (row 0) left out; zeros for an empty bag."""
        mask = tf.cast(ids > 0, self.compute_dtype)[..., tf.newaxis]
        total = tf.reduce_sum(self._embedding(ids) * mask, axis=1)
        return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

    def embed_id(self, ids: tf.Tensor) -> tf.Tensor:
        """`[n]` rows (one token each) -> `[n, embedding_dim]`: `embed_ids` of bags of one,
        in fewer ops (the ids' own rows, zeros for padding)."""
        return self._embedding(ids) * tf.cast(ids > 0, self.compute_dtype)[:, tf.newaxis]

    @property
    def table(self) -> tf.Variable:
        """The embedding table `[rows, embedding_dim]` (built on first use)."""
        return self._embedding.embeddings

    def call(self, tokens: tf.Tensor) -> tf.Tensor:
        """Embeds token bags.

        Args:
          tokens: `[batch_size]` or `[batch_size, n]` strings, "" as padding, or their
            int64 rows (`token_ids`, e.g. looked up in the input pipeline).

        Returns:
          `[batch_size, embedding_dim]` mean embeddings (zeros for an empty bag).
        """
        rows = tokens if tokens.dtype.is_integer else self.token_ids(tokens)
        if tokens.shape.rank == 1:
            return self.embed_id(rows)
        return self.embed_ids(rows)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary": self._vocabulary.tolist(),
            "embedding_dim": self._embedding_dim,
            "num_oov_buckets": self._num_oov_buckets,
            "initializer": self._initializer,
        }


@tf.keras.utils.register_keras_serializable(package="twotower")
class Unprojected(tf.keras.layers.Layer):
    """A tower's output without a projection: its inputs as they are (float32), which
    must already be `output_dim` wide (`model.output_projection=false`)."""

    def __init__(self, output_dim: int, tower: str, **kwargs: Any):
        super().__init__(dtype="float32", **{k: v for k, v in kwargs.items() if k != "dtype"})
        self._output_dim = output_dim
        self._tower = tower

    def build(self, input_shape: tf.TensorShape) -> None:
        width = input_shape[-1]
        if width is not None and width != self._output_dim:
            raise ValueError(
                f"model.output_projection=false: the {self._tower} tower's inputs are {width} "
                f"wide, so they cannot be its {self._output_dim}-wide output (model.output_dim); "
                "without a projection a tower must read one embedding of model.output_dim: "
                "model.inputs=ids, model.embedding_dim = model.output_dim, no DAT"
            )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.cast(inputs, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_dim": self._output_dim, "tower": self._tower}


def mlp(
    hidden_units: Sequence[int], output_dim: int, name: str, projection: bool = True
) -> tf.keras.Sequential:
    """ReLU hidden layers and a linear output layer; without `projection`, no layer at
    all (TFRS's basic model: the id embedding is the tower's output)."""
    if not projection:
        if hidden_units:
            raise ValueError("a tower without an output projection has no hidden layers")
        return tf.keras.Sequential([Unprojected(output_dim, name.split("_")[0])], name=name)
    layers = [tf.keras.layers.Dense(units, activation="relu") for units in hidden_units]
    # float32 output under mixed precision too: scores, losses and exports stay float32.
    layers.append(tf.keras.layers.Dense(output_dim, dtype="float32"))
    return tf.keras.Sequential(layers, name=name)
