"""StringIndex: strings -> int64 rows of an embedding table, through a static hash table."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf


class StringIndex(tf.keras.layers.Layer):
    """Maps strings to rows: [mask] [OOV buckets] [vocabulary, in order].

    With `mask_token` set, that token is row 0 and the buckets start at 1; a string not
    in the vocabulary goes to one of `num_oov_buckets` rows by its FarmHash fingerprint.
    The layout and the hash are `tf.keras.layers.StringLookup`'s, so tables trained with
    either read the same. Why not StringLookup itself: it keeps the vocabulary it was
    given as a Python list attribute, which Keras tracks and walks every time it lists
    the model's layers or metrics -- at every step, from the progress bar -- so a
    catalog-sized vocabulary made each step cost time proportional to the catalog. Here
    the vocabulary lives only in the hash table (a TF resource), which Keras never walks.
    """

    def __init__(
        self,
        vocabulary: Sequence[str] | np.ndarray,
        num_oov_buckets: int = 1,
        mask_token: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(trainable=False, **kwargs)
        if num_oov_buckets < 1:
            raise ValueError(f"num_oov_buckets must be positive, got {num_oov_buckets}")
        keys = np.asarray(vocabulary, dtype=object)
        if keys.ndim != 1:
            raise ValueError(f"vocabulary must be a flat list of strings, got shape {keys.shape}")
        self._mask_token = mask_token
        self._num_oov_buckets = num_oov_buckets
        self._start = num_oov_buckets + (mask_token is not None)
        self._size = self._start + len(keys)
        # One bucket: a missing string's row is the table's default (no hashing). The mask
        # token is a key of its own (row 0), so a lookup is the whole work.
        default = int(mask_token is not None) if num_oov_buckets == 1 else -1
        if mask_token is not None:
            keys = np.concatenate([np.array([mask_token], dtype=object), keys])
        values = np.concatenate(
            [[0] if mask_token is not None else [], np.arange(self._start, self._size)]
        ).astype(np.int64)
        # init_scope: the table is made eagerly, even when the layer is built in a graph.
        with tf.init_scope():
            self._table = (
                tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant(keys, tf.string, shape=[len(keys)]),
                        tf.constant(values, tf.int64),
                    ),
                    default_value=default,
                )
                if len(keys)
                else None
            )
        self._default = default

    def vocabulary_size(self) -> int:
        """Rows of a table this index addresses: mask + buckets + vocabulary."""
        return self._size

    def call(self, strings: tf.Tensor) -> tf.Tensor:
        """`[...]` strings -> `[...]` int64 rows."""
        strings = tf.convert_to_tensor(strings)
        if strings.dtype != tf.string:
            # Keras builds a model from its config by calling it on float placeholders.
            strings = tf.strings.as_string(strings)
        if self._table is None:
            rows = tf.fill(tf.shape(strings), tf.constant(self._default, tf.int64))
        else:
            rows = self._table.lookup(strings)
        if self._default >= 0:
            return rows
        buckets = tf.strings.to_hash_bucket_fast(strings, self._num_oov_buckets)
        return tf.where(rows < 0, buckets + int(self._mask_token is not None), rows)
