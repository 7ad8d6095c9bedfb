"""The two-tower retrieval model: two towers and TFRS's Retrieval task."""

from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer.dataset import Dataset
from trainer.towers import USER_FEATURE_PREFIX, CandidateTower, QueryTower
from twotower.config import Config


@tf.keras.utils.register_keras_serializable(package="twotower")
class TwoTowerModel(tfrs.Model):
    """In-batch softmax over (user, clicked item) pairs, TFRS's `Retrieval` task.

    With `similarity="cosine"` both embeddings are L2-normalised and the logits are
    divided by `temperature`; with "dot" the raw inner product is the logit.
    """

    def __init__(
        self,
        query_tower: QueryTower,
        candidate_tower: CandidateTower,
        similarity: str = "dot",
        temperature: float = 1.0,
        remove_accidental_hits: bool = True,
        item_probabilities: dict[str, float] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self._similarity = similarity
        self._temperature = temperature
        self._remove_accidental_hits = remove_accidental_hits
        # logQ correction with the training-set click frequency of each item: in-batch
        # negatives are drawn in proportion to it, which otherwise pushes popular items down.
        self._item_probabilities = dict(item_probabilities) if item_probabilities else None
        self._probability_table = None
        if self._item_probabilities:
            smallest = min(self._item_probabilities.values())
            self._probability_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    list(self._item_probabilities),
                    list(self._item_probabilities.values()),
                    value_dtype=tf.float32,
                ),
                default_value=smallest,
            )
        self.task = tfrs.tasks.Retrieval(
            temperature=temperature if similarity == "cosine" else None,
            remove_accidental_hits=remove_accidental_hits,
        )

    def _normalise(self, embeddings: tf.Tensor) -> tf.Tensor:
        return (
            tf.math.l2_normalize(embeddings, axis=-1)
            if self._similarity == "cosine"
            else embeddings
        )

    def query_embeddings(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """`[batch_size, dim]` user embeddings, in the space items are scored in."""
        return self._normalise(self.query_tower(features))

    def candidate_embeddings(self, item_ids: tf.Tensor) -> tf.Tensor:
        """`[num_items, dim]` item embeddings for `[num_items]` item ids."""
        return self._normalise(self.candidate_tower(item_ids))

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.task(
            self.query_embeddings(features),
            self.candidate_embeddings(features["item_id"]),
            candidate_ids=features["item_id"],
            candidate_sampling_probability=(
                self._probability_table.lookup(features["item_id"])
                if self._probability_table is not None
                else None
            ),
            compute_metrics=False,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "query_tower": tf.keras.utils.serialize_keras_object(self.query_tower),
            "candidate_tower": tf.keras.utils.serialize_keras_object(self.candidate_tower),
            "similarity": self._similarity,
            "temperature": self._temperature,
            "remove_accidental_hits": self._remove_accidental_hits,
            "item_probabilities": self._item_probabilities,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TwoTowerModel":
        config = dict(config)
        for name in ("query_tower", "candidate_tower"):
            config[name] = tf.keras.utils.deserialize_keras_object(config[name])
        return cls(**config)


def build_model(config: Config, dataset: Dataset) -> TwoTowerModel:
    """The model that `config` describes, sized by `dataset`'s vocabularies and catalog."""
    model = config.model
    query = QueryTower(
        user_vocabulary=dataset.vocabularies.get("user_id", []),
        item_ids=dataset.item_ids,
        user_feature_vocabularies={
            name: dataset.vocabularies.get(USER_FEATURE_PREFIX + name, [])
            for name in dataset.user_features
        },
        embedding_dim=model.embedding_dim,
        hidden_units=model.hidden_units,
        output_dim=model.output_dim,
        name="query_tower",
    )
    candidate = CandidateTower(
        item_ids=dataset.item_ids,
        item_clusters=dataset.item_clusters,
        item_features=dataset.item_features,
        embedding_dim=model.embedding_dim,
        hidden_units=model.hidden_units,
        output_dim=model.output_dim,
        name="candidate_tower",
    )
    return TwoTowerModel(
        query,
        candidate,
        similarity=model.similarity,
        temperature=config.negatives.temperature,
        remove_accidental_hits=config.negatives.remove_accidental_hits,
        item_probabilities=dataset.item_probabilities()
        if config.negatives.logq_correction
        else None,
    )
