"""The query (user) tower and the candidate (item) tower."""

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from common.contracts import HISTORY, USER_FEATURE_PREFIX, USER_ID
from trainer.token_bag import PAD, TokenBagEmbedding, mlp


@tf.keras.utils.register_keras_serializable(package="twotower")
class QueryTower(tf.keras.Model):
    """User id, user features and pooled click history -> MLP -> embedding.

    Inputs are a dict: "user_id" `[batch_size]`, "history" `[batch_size, n]` item ids,
    and "user.<name>" `[batch_size, n]` tokens for each user feature (all strings).
    """

    def __init__(
        self,
        user_vocabulary: Sequence[str],
        item_ids: Sequence[str],
        user_feature_vocabularies: dict[str, Sequence[str]],
        embedding_dim: int,
        hidden_units: Sequence[int],
        output_dim: int,
        augmented: bool = False,
        num_oov_buckets: int = 1,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._args = {
            "augmented": augmented,
            "num_oov_buckets": num_oov_buckets,
            "user_vocabulary": list(user_vocabulary),
            "item_ids": list(item_ids),
            "user_feature_vocabularies": {k: list(v) for k, v in user_feature_vocabularies.items()},
            "embedding_dim": embedding_dim,
            "hidden_units": list(hidden_units),
            "output_dim": output_dim,
        }
        self._user_id = TokenBagEmbedding(
            user_vocabulary, embedding_dim, num_oov_buckets, name="user_id"
        )
        self._history = TokenBagEmbedding(item_ids, embedding_dim, num_oov_buckets, name="history")
        self._features = {
            name: TokenBagEmbedding(vocabulary, embedding_dim, num_oov_buckets, name=f"user_{name}")
            for name, vocabulary in sorted(user_feature_vocabularies.items())
        }
        # DAT (Yu et al. 2021): a per-user augmented vector fed to the MLP, trained to mimic
        # the embeddings of the items the user clicked (the model adds that loss).
        self._augmented = (
            TokenBagEmbedding(user_vocabulary, output_dim, name="augmented") if augmented else None
        )
        self._mlp = mlp(hidden_units, output_dim, name="query_mlp")

    @property
    def augmented(self) -> bool:
        """Whether the tower has DAT augmented vectors."""
        return self._augmented is not None

    def augmented_vector(self, features: dict[str, tf.Tensor]) -> tf.Tensor | None:
        """`[batch_size, output_dim]` DAT augmented vectors, or None for a plain tower."""
        return None if self._augmented is None else self._augmented(features["user_id"])

    @property
    def feature_names(self) -> list[str]:
        return [USER_ID, HISTORY] + [USER_FEATURE_PREFIX + n for n in self._features]

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        parts = [self._user_id(features["user_id"]), self._history(features["history"])]
        parts += [
            layer(features[USER_FEATURE_PREFIX + name]) for name, layer in self._features.items()
        ]
        if self._augmented is not None:
            parts.append(self._augmented(features["user_id"]))
        return self._mlp(tf.concat(parts, axis=1))

    def get_config(self) -> dict[str, Any]:
        return dict(self._args)


@tf.keras.utils.register_keras_serializable(package="twotower")
class CandidateTower(tf.keras.Model):
    """Item id, cluster and catalog features -> MLP -> embedding.

    The catalog (clusters, feature tokens) is held in the graph, so the tower takes
    item ids `[batch_size]` alone.
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        item_clusters: Sequence[str],
        item_features: dict[str, Sequence[Sequence[str]]],
        embedding_dim: int,
        hidden_units: Sequence[int],
        output_dim: int,
        augmented: bool = False,
        num_oov_buckets: int = 1,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if len(item_clusters) != len(item_ids):
            raise ValueError(
                f"item_clusters has {len(item_clusters)} entries, item_ids {len(item_ids)}"
            )
        self._args = {
            "augmented": augmented,
            "num_oov_buckets": num_oov_buckets,
            "item_ids": list(item_ids),
            "item_clusters": list(item_clusters),
            "item_features": {k: [list(t) for t in v] for k, v in item_features.items()},
            "embedding_dim": embedding_dim,
            "hidden_units": list(hidden_units),
            "output_dim": output_dim,
        }
        self._item_id = TokenBagEmbedding(item_ids, embedding_dim, num_oov_buckets, name="item_id")
        # Row 0 of each catalog table is the out-of-vocabulary item, row i+1 item i.
        self._item_index = tf.keras.layers.StringLookup(vocabulary=list(item_ids), mask_token=None)
        self._cluster_table = tf.constant([PAD] + list(item_clusters))
        self._cluster = TokenBagEmbedding(sorted(set(item_clusters)), embedding_dim, name="cluster")
        self._feature_tables = {}
        self._features = {}
        for name, tokens in sorted(item_features.items()):
            self._feature_tables[name] = tf.ragged.constant(
                [[]] + [list(t) for t in tokens], dtype=tf.string
            ).to_tensor(PAD)
            vocabulary = sorted({t for row in tokens for t in row})
            self._features[name] = TokenBagEmbedding(
                vocabulary, embedding_dim, num_oov_buckets, name=f"item_{name}"
            )
        self._augmented = (
            TokenBagEmbedding(item_ids, output_dim, name="augmented") if augmented else None
        )
        self._mlp = mlp(hidden_units, output_dim, name="candidate_mlp")

    def item_index(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Catalog index of each item id; -1 for an id not in the catalog."""
        return self._item_index(item_ids) - 1

    def category_embedding(self, item_ids: tf.Tensor) -> tf.Tensor:
        """`[batch_size, embedding_dim]` embedding of each item's cluster (category)."""
        return self._cluster(tf.gather(self._cluster_table, self._item_index(item_ids)))

    def augmented_vector(self, item_ids: tf.Tensor) -> tf.Tensor | None:
        """`[batch_size, output_dim]` DAT augmented item vectors, or None."""
        return None if self._augmented is None else self._augmented(item_ids)

    def call(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Args: item_ids of any shape `[...]`. Returns `[..., output_dim]`."""
        shape = tf.shape(item_ids)
        item_ids = tf.reshape(item_ids, [-1])
        index = self._item_index(item_ids)
        parts = [self._item_id(item_ids), self._cluster(tf.gather(self._cluster_table, index))]
        parts += [
            layer(tf.gather(self._feature_tables[name], index))
            for name, layer in self._features.items()
        ]
        if self._augmented is not None:
            parts.append(self._augmented(item_ids))
        embeddings = self._mlp(tf.concat(parts, axis=1))
        return tf.reshape(embeddings, tf.concat([shape, [self._args["output_dim"]]], axis=0))

    def get_config(self) -> dict[str, Any]:
        return dict(self._args)
