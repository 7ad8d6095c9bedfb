"""The query (user) tower and the candidate (item) tower."""

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from common.contracts import CATEGORICAL, HISTORY, IDENTIFIER, USER_FEATURE_PREFIX, USER_ID
from trainer.dense_feature import dense_layer
from trainer.negatives.draws import draw_seed, step_counter
from trainer.string_index import StringIndex
from trainer.token_bag import PAD, TokenBagEmbedding, mlp

# The id row of an item outside the catalog: no catalog id, so an OOV bucket.
_UNKNOWN = "\x00not-in-the-catalog"


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
        projection: bool = True,
        num_oov_buckets: int = 1,
        history: bool = True,
        user_dense: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        user_dense = dict(user_dense or {})
        # JSON, not a dict: vocabularies are catalog-sized, and Keras walks the Python
        # containers a layer holds at every step.
        self._config_json = json.dumps(
            {
                "augmented": augmented,
                "num_oov_buckets": num_oov_buckets,
                "history": history,
                "user_vocabulary": list(user_vocabulary),
                "item_ids": list(item_ids),
                "user_feature_vocabularies": {
                    k: list(v) for k, v in user_feature_vocabularies.items()
                },
                "embedding_dim": embedding_dim,
                "hidden_units": list(hidden_units),
                "output_dim": output_dim,
                "projection": projection,
                "user_dense": user_dense,
            }
        )
        self._user_id = TokenBagEmbedding(
            user_vocabulary, embedding_dim, num_oov_buckets, name="user_id"
        )
        # Without history (model.inputs=ids) the tower is TFRS's user-id model plus the MLP.
        self._history = (
            TokenBagEmbedding(item_ids, embedding_dim, num_oov_buckets, name="history")
            if history
            else None
        )
        self._features = {
            name: TokenBagEmbedding(vocabulary, embedding_dim, num_oov_buckets, name=f"user_{name}")
            for name, vocabulary in sorted(user_feature_vocabularies.items())
        }
        # Numeric and vector user features (manifest `features`): raw floats, NaN = missing.
        self._dense = {
            name: dense_layer(f"user_{name}", spec, embedding_dim)
            for name, spec in sorted(user_dense.items())
        }
        # DAT (Yu et al. 2021): a per-user augmented vector fed to the MLP, trained to mimic
        # the embeddings of the items the user clicked (the model adds that loss).
        self._augmented = (
            TokenBagEmbedding(user_vocabulary, output_dim, name="augmented") if augmented else None
        )
        self._mlp = mlp(hidden_units, output_dim, name="query_mlp", projection=projection)

    @property
    def augmented(self) -> bool:
        """Whether the tower has DAT augmented vectors."""
        return self._augmented is not None

    def augmented_vector(self, features: dict[str, tf.Tensor]) -> tf.Tensor | None:
        """`[batch_size, output_dim]` DAT augmented vectors, or None for a plain tower."""
        return None if self._augmented is None else self._augmented(features["user_id"])

    @property
    def feature_names(self) -> list[str]:
        history = [HISTORY] if self._history is not None else []
        names = [USER_FEATURE_PREFIX + n for n in [*self._features, *self._dense]]
        return [USER_ID, *history, *names]

    def input_specs(self) -> dict[str, tf.TensorSpec]:
        """The tower's raw inputs: strings, and float32 `[batch, dim]` for dense features."""
        specs = {USER_ID: tf.TensorSpec([None], tf.string, name=USER_ID)}
        for name in self.feature_names[1:]:
            layer = self._dense_input(name)
            specs[name] = (
                tf.TensorSpec([None, layer.get_config()["dim"]], tf.float32, name=name)
                if layer is not None
                else tf.TensorSpec([None, None], tf.string, name=name)
            )
        return specs

    def _dense_input(self, name: str) -> Any:
        """The DenseFeature layer of a raw input, or None for a string input."""
        if not name.startswith(USER_FEATURE_PREFIX):
            return None
        return self._dense.get(name[len(USER_FEATURE_PREFIX) :])

    def inputs_from(self, features: dict[str, np.ndarray], num_users: int) -> dict[str, tf.Tensor]:
        """Tensors for `input_specs` from numpy rows (e.g. a query set): strings as they
        are ("" padding for an absent input), floats `[num_users, dim]` (NaN: missing)."""
        tensors = {}
        for name, spec in self.input_specs().items():
            value = features.get(name)
            if spec.dtype == tf.float32:
                dim = spec.shape[1]
                if value is None or np.asarray(value).dtype == object:
                    value = np.full((num_users, dim), np.nan, np.float32)
                tensors[name] = tf.constant(np.asarray(value, np.float32).reshape(num_users, dim))
            else:
                if value is None:
                    value = np.full((num_users, 1), PAD, dtype=object)
                tensors[name] = tf.constant(np.asarray(value).tolist(), dtype=tf.string)
        return tensors

    def input_kinds(self) -> dict[str, dict[str, Any]]:
        """{input: {"kind", "dim"}}: what each raw input holds (the export manifest's)."""
        kinds: dict[str, dict[str, Any]] = {USER_ID: {"kind": IDENTIFIER}}
        for name in self.feature_names[1:]:
            layer = self._dense_input(name)
            if layer is not None:
                config = layer.get_config()
                kinds[name] = {"kind": config["kind"], "dim": config["dim"]}
            else:
                kinds[name] = {"kind": CATEGORICAL}
        return kinds

    def index_inputs(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """`features` with each string input this tower embeds replaced by its int64 rows
        (what `call` accepts too): the vocabulary lookups, done in the input pipeline so
        that the training step holds no string work. Rows pass through unchanged."""
        layers = {USER_ID: self._user_id, HISTORY: self._history}
        layers.update({USER_FEATURE_PREFIX + n: layer for n, layer in self._features.items()})
        if self._augmented is not None and (
            self._augmented.vocabulary_size() != self._user_id.vocabulary_size()
        ):
            del layers[USER_ID]  # two tables with different rows read the same user id
        indexed = dict(features)
        for name, layer in layers.items():
            if layer is not None and name in features and features[name].dtype == tf.string:
                indexed[name] = layer.token_ids(features[name])
        return indexed

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        parts = [self._user_id(features["user_id"])]
        if self._history is not None:
            parts.append(self._history(features["history"]))
        parts += [
            layer(features[USER_FEATURE_PREFIX + name]) for name, layer in self._features.items()
        ]
        parts += [
            tf.cast(layer(features[USER_FEATURE_PREFIX + name]), parts[0].dtype)
            for name, layer in self._dense.items()
        ]
        if self._augmented is not None:
            parts.append(self._augmented(features["user_id"]))
        return self._mlp(tf.concat(parts, axis=1))

    def get_config(self) -> dict[str, Any]:
        return json.loads(self._config_json)


@tf.keras.utils.register_keras_serializable(package="twotower")
class CandidateTower(tf.keras.Model):
    """Item id, cluster and catalog features -> MLP -> embedding.

    The catalog is held in the graph as integer tables (each item's rows in the id,
    cluster and feature embedding tables, looked up once here), so the tower takes item
    ids `[...]` or catalog indices (`encode_indices`) alone and no string is touched per
    item after the id's own lookup. An id outside the catalog gets the id table's
    out-of-vocabulary row and no cluster or features.
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
        projection: bool = True,
        num_oov_buckets: int = 1,
        item_id_init: str = "uniform",
        cluster: bool = True,
        item_id_vocabulary: Sequence[str] | None = None,
        item_dense: dict[str, dict[str, Any]] | None = None,
        item_dense_values: dict[str, np.ndarray] | None = None,
        id_dropout: float = 0.0,
        seed: int = 0,
        **kwargs: Any,
    ):
        """`item_dense`: the manifest `features` entries of the numeric, vector and text
        item features; `item_dense_values`: their `[num_items, dim]` values (NaN rows:
        missing), from the dataset -- not part of the config, which stays small. `seed`:
        of the id dropout's masks (the training seed)."""
        super().__init__(**kwargs)
        item_dense = dict(item_dense or {})
        item_dense_values = dict(item_dense_values or {})
        if set(item_dense) != set(item_dense_values):
            raise ValueError(
                f"item_dense names {sorted(item_dense)} and their values "
                f"{sorted(item_dense_values)} differ"
            )
        if len(item_clusters) != len(item_ids):
            raise ValueError(
                f"item_clusters has {len(item_clusters)} entries, item_ids {len(item_ids)}"
            )
        # JSON, not a dict: Keras walks the Python containers a layer holds at every step,
        # and these hold the whole catalog.
        self._config_json = json.dumps(
            {
                "item_id_init": item_id_init,
                "cluster": cluster,
                "item_id_vocabulary": None
                if item_id_vocabulary is None
                else list(item_id_vocabulary),
                "augmented": augmented,
                "num_oov_buckets": num_oov_buckets,
                "item_ids": list(item_ids),
                "item_clusters": list(item_clusters),
                "item_features": {k: [list(t) for t in v] for k, v in item_features.items()},
                "embedding_dim": embedding_dim,
                "hidden_units": list(hidden_units),
                "output_dim": output_dim,
                "projection": projection,
                "item_dense": item_dense,
                "id_dropout": id_dropout,
                "seed": seed,
            }
        )
        self._id_dropout = float(id_dropout)
        self._seed = seed
        # How many times training has encoded items (a checkpointed variable, only with
        # id dropout): the masks' stateless seed, as the sampled negatives' step is theirs.
        self._dropout_draws = step_counter("id_dropout_draws") if id_dropout else None
        self._output_dim = output_dim
        # Encoding each distinct item once pays where an item costs an MLP pass; with no
        # hidden layer an item is a few row gathers (and a projection), cheaper than the
        # tf.unique that would dedupe them (the TFRS comparison: 4.1 -> 3.8 ms a step).
        # The optimizer sums a repeated row's gradients either way.
        self._dedupe = bool(hidden_units)
        self._use_cluster = cluster  # False (model.inputs=ids): the item id alone
        # A numpy array, not a list: Keras does not track it, and the model's tables
        # are built from it without parsing the config's JSON again.
        self._catalog = np.asarray(item_ids, dtype=object)
        self._catalog.setflags(write=False)
        self._item_index = StringIndex(self._catalog)
        # Zeros: an item training never reached scores by its cluster and features alone,
        # instead of by the random start of its row (the cold and never-shown items).
        # Items outside `item_id_vocabulary` (data.min_count, max_vocab_size) share the
        # OOV bucket rows.
        self._item_id = TokenBagEmbedding(
            item_ids if item_id_vocabulary is None else item_id_vocabulary,
            embedding_dim,
            num_oov_buckets,
            initializer=item_id_init,
            name="item_id",
        )
        self._cluster = TokenBagEmbedding(sorted(set(item_clusters)), embedding_dim, name="cluster")
        self._features = {
            name: TokenBagEmbedding(
                sorted({t for row in tokens for t in row}),
                embedding_dim,
                num_oov_buckets,
                name=f"item_{name}",
            )
            for name, tokens in sorted(item_features.items())
        }
        self._augmented = (
            TokenBagEmbedding(
                item_ids if item_id_vocabulary is None else item_id_vocabulary,
                output_dim,
                name="augmented",
            )
            if augmented
            else None
        )
        self._mlp = mlp(hidden_units, output_dim, name="candidate_mlp", projection=projection)
        # Row 0 of every table below is an item outside the catalog, row i + 1 item i.
        ids = tf.constant([[_UNKNOWN]] + [[item] for item in item_ids])
        self._id_rows = self._item_id.token_ids(ids)
        self._cluster_rows = self._cluster.token_ids(
            tf.constant([[PAD]] + [[c] for c in item_clusters])
        )
        self._feature_rows = {
            name: layer.token_ids(
                tf.ragged.constant(
                    [[]] + [list(t) for t in item_features[name]], dtype=tf.string
                ).to_tensor(PAD)
            )
            for name, layer in self._features.items()
        }
        self._augmented_rows = None if self._augmented is None else self._augmented.token_ids(ids)
        # Dense item features: row 0 (outside the catalog) is missing (NaN), like any
        # item without the value; the tables are tensors, never Python lists.
        self._dense = {
            name: dense_layer(f"item_{name}", spec, embedding_dim)
            for name, spec in sorted(item_dense.items())
        }
        self._dense_rows = {}
        for name, layer in self._dense.items():
            values = np.asarray(item_dense_values[name], dtype=np.float32)
            dim = layer.get_config()["dim"]
            if values.shape != (len(item_ids), dim):
                raise ValueError(
                    f"item feature {name}: values of shape {values.shape}, expected "
                    f"({len(item_ids)}, {dim})"
                )
            with tf.init_scope():
                self._dense_rows[name] = tf.constant(
                    np.concatenate([np.full((1, dim), np.nan, np.float32), values])
                )
        # Sliced once here: a slice inside the step copies the catalog-sized column each time.
        self._id_row = self._id_rows[:, 0]
        self._augmented_row = None if self._augmented is None else self._augmented_rows[:, 0]

    def item_index(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Catalog index (int64) of each item id; -1 for an id not in the catalog or
        padding (""). Integers are taken as catalog indices already and pass through."""
        if item_ids.dtype.is_integer:
            return tf.cast(item_ids, tf.int64)
        return self._item_index(item_ids) - 1

    def table_rows(self, indices: tf.Tensor) -> dict[str, tuple[tf.Variable, tf.Tensor]]:
        """{name: (table, rows)}: every embedding table of the tower and the rows `[m]`
        that the items of catalog `indices` `[n]` read in it (ids, cluster, each feature's
        tokens, padding row 0 included; repeated where items share a token): what
        training changes when those items are trained. The tables grow with the catalog
        (ids) or with a feature's vocabulary, so per-step work on them goes by rows."""
        rows = indices + 1
        tables = {"item_id": (self._item_id.table, tf.gather(self._id_row, rows))}
        if self._use_cluster:
            tables["cluster"] = (
                self._cluster.table,
                tf.reshape(tf.gather(self._cluster_rows, rows), [-1]),
            )
        for name, layer in self._features.items():
            tables[f"item_{name}"] = (
                layer.table,
                tf.reshape(tf.gather(self._feature_rows[name], rows), [-1]),
            )
        if self._augmented is not None:
            tables["augmented"] = (self._augmented.table, tf.gather(self._augmented_row, rows))
        return tables

    def category_embedding(self, item_ids: tf.Tensor) -> tf.Tensor:
        """`[batch_size, embedding_dim]` embedding of each item's cluster (category)."""
        return self._cluster.embed_ids(tf.gather(self._cluster_rows, self.item_index(item_ids) + 1))

    def augmented_vector(self, item_ids: tf.Tensor) -> tf.Tensor | None:
        """`[batch_size, output_dim]` DAT augmented item vectors, or None."""
        if self._augmented is None:
            return None
        return self._augmented.embed_ids(
            tf.gather(self._augmented_rows, self.item_index(item_ids) + 1)
        )

    def encode_indices(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Catalog indices of any shape `[...]` (-1: outside the catalog) -> `[..., dim]`.

        With hidden layers each distinct item goes through the tower once: sampled
        negatives repeat items (same-cluster draws, uniform draws, a queue of recent
        clicks), and the tower's cost is per item encoded.
        """
        shape = tf.shape(indices)
        rows = tf.reshape(tf.cast(indices, tf.int64), [-1]) + 1
        if self._dedupe:
            unique, position = tf.unique(rows)
            embeddings = tf.gather(self._encode_rows(unique, training), position)
        else:
            embeddings = self._encode_rows(rows, training)
        return tf.reshape(embeddings, tf.concat([shape, [self._output_dim]], axis=0))

    def _encode_rows(self, rows: tf.Tensor, training: bool = False) -> tf.Tensor:
        """`[n]` rows of the catalog tables (0: outside the catalog) -> `[n, dim]`."""
        item_id = self._item_id.embed_id(tf.gather(self._id_row, rows))
        if training and self._id_dropout:
            # DropoutNet (Volkovs et al. 2017): training sometimes hides an item's id, so
            # the tower learns to place an item from its content alone, as it must place
            # an item nobody has clicked yet (whose id row never trained).
            # Stateless from (seed, count of training encodes, replica): every replica
            # masks its own items, and a resumed run continues the masks where its backup
            # left off (a stateful draw gave every worker the same masks and replayed them).
            seed = draw_seed(self._seed, self._dropout_draws.assign_add(1), "item_id_dropout")
            keep = tf.random.stateless_uniform(tf.shape(rows), seed) >= self._id_dropout
            item_id *= tf.cast(keep, item_id.dtype)[:, tf.newaxis]
        parts = [item_id]
        if self._use_cluster:
            parts.append(self._cluster.embed_ids(tf.gather(self._cluster_rows, rows)))
        parts += [
            layer.embed_ids(tf.gather(self._feature_rows[name], rows))
            for name, layer in self._features.items()
        ]
        parts += [
            tf.cast(layer(tf.gather(self._dense_rows[name], rows)), parts[0].dtype)
            for name, layer in self._dense.items()
        ]
        if self._augmented is not None:
            parts.append(self._augmented.embed_ids(tf.gather(self._augmented_rows, rows)))
        return self._mlp(tf.concat(parts, axis=1))

    def call(self, item_ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Args: item ids (or int64 catalog indices) of any shape `[...]`.
        Returns `[..., output_dim]`."""
        return self.encode_indices(self.item_index(item_ids), training=bool(training))

    @property
    def catalog(self) -> np.ndarray:
        """The catalog's item ids in index order (read-only)."""
        return self._catalog

    def get_config(self) -> dict[str, Any]:
        return json.loads(self._config_json)
