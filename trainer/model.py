"""The two-tower retrieval model: two towers, negative sources and a loss over them."""

import functools
import json
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer import losses
from trainer.exposure import ExposurePropensity
from trainer.negatives.candidates import Batch, Candidates, by_index
from trainer.negatives.in_batch import click_shares
from trainer.negatives.intention_queue import IntentionQueueNegatives
from trainer.negatives.logged import FEATURES as LOGGED_FEATURES
from trainer.negatives.logged import SIZE_FEATURES, LoggedNegatives
from trainer.negatives.momentum_queue import MomentumQueueNegatives
from trainer.negatives.source import NegativeSource
from trainer.propensity_network import PropensityNetwork
from trainer.seed_streams import align_seed_streams
from trainer.towers import CandidateTower, QueryTower

LOSSES = ("softmax", "bce", "tfrs")
_EPSILON = 1e-12


@tf.keras.utils.register_keras_serializable(package="twotower")
class TwoTowerModel(tfrs.Model):
    """Query and candidate towers trained against any set of negative sources.

    Losses:
      "tfrs": TFRS's `Retrieval` task (in-batch softmax, optional static logQ through
        its `candidate_sampling_probability`); the baseline, no other sources.
      "softmax": sampled softmax of the positive against every source's negatives, each
        corrected by its source's rule (logQ over the mixture proposal, IPW, none).
      "bce": binary cross-entropy, each negative group weighted by its λ (UMA²).
    With a `propensity_network`, UMA²'s two heads learn p1 = P(recalled) and p2 = P(exposed |
    recalled) and Space A / B negatives get IPW weights 1/(p1·p2) and 1/p1.
    """

    def __init__(
        self,
        query_tower: QueryTower,
        candidate_tower: CandidateTower,
        sources: Sequence[NegativeSource] = (),
        loss: str = "tfrs",
        similarity: str = "dot",
        temperature: float = 1.0,
        remove_accidental_hits: bool = True,
        item_probabilities: dict[str, float] | None = None,
        lambdas: dict[str, float] | None = None,
        propensity_network: PropensityNetwork | None = None,
        mimic_weight: float = 0.0,
        exposure: ExposurePropensity | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if loss == "tfrs" and (sources or exposure is not None):
            raise ValueError(
                "loss='tfrs' is TFRS's in-batch task; it takes no other sources and no "
                "exposure propensities"
            )
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.sources = list(sources)
        for source in self.sources:
            source.bind(candidate_tower)
        self._link_momentum_intentions()
        self.exposure = exposure
        self._loss = loss
        self._similarity = similarity
        self._temperature = temperature if similarity == "cosine" else 1.0
        self._config_temperature = temperature
        self._remove_accidental_hits = remove_accidental_hits
        # A JSON string, not a dict: Keras walks the containers a layer holds every step.
        self._item_probabilities = json.dumps(dict(item_probabilities or {}))
        self._lambdas = dict(lambdas or {})
        self._mimic_weight = mimic_weight
        catalog = candidate_tower.catalog
        self._num_items = len(catalog)
        # By catalog index (row 0: no catalog item), so the step gathers, never hashes.
        self._click_shares = (
            click_shares(item_probabilities, catalog) if item_probabilities else None
        )
        for layer in (exposure, propensity_network):
            if layer is not None:
                layer.bind(catalog)
        self.task = tfrs.tasks.Retrieval(
            temperature=self._temperature if similarity == "cosine" else None,
            remove_accidental_hits=remove_accidental_hits,
        )
        self.propensity_network = propensity_network
        self._trackers: dict[str, tf.keras.metrics.Mean] = {}
        # Examples the training steps consumed (run.json's `examples_read`): each replica
        # counts its own, a read sums them.
        self.examples_read = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="examples_read",
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM,
        )
        # Layers built above (a source's `bind`) drew seeds in this thread; a strategy's
        # replica threads, which build the rest, must continue after them.
        align_seed_streams()

    def _track(self, name: str, value: tf.Tensor) -> None:
        if name not in self._trackers:
            self._trackers[name] = tf.keras.metrics.Mean(name=name)
        self._trackers[name].update_state(value)

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        return super().metrics + list(self._trackers.values())

    def _normalise(self, embeddings: tf.Tensor) -> tf.Tensor:
        if self._similarity == "cosine":
            return tf.math.l2_normalize(embeddings, axis=-1)
        return embeddings

    def query_embeddings(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """`[batch_size, dim]` user embeddings, in the space items are scored in."""
        return self._normalise(self.query_tower(features))

    @property
    def input_features(self) -> list[str]:
        """The example features a training step reads (what the input pipeline parses)."""
        names = [*self.query_tower.feature_names, "item_id"]
        logged = sorted({s.feature for s in self.sources if isinstance(s, LoggedNegatives)})
        names += logged
        if logged or self.propensity_network is not None:
            names += sorted(SIZE_FEATURES.values())
        return names

    def index_features(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The vocabulary lookups of a training step, for the input pipeline to run
        (`make_dataset(index=...)`): the query tower's string inputs become their
        embedding rows, `item_id` and the logged spaces' items int64 catalog indices
        (-1: padding or no catalog item). Already looked-up features pass through, so
        `compute_loss` takes either form."""
        indexed = self.query_tower.index_inputs(features)
        for name in ("item_id", *LOGGED_FEATURES.values()):
            if name in features and features[name].dtype == tf.string:
                indexed[name] = self.candidate_tower.item_index(features[name])
        return indexed

    @property
    def intentions(self) -> int:
        """H, the user intention vectors of a Multi-CLRec model; 0 for any other."""
        source = self._intention_source()
        return source.num_intentions if source is not None else 0

    def _intention_source(self) -> IntentionQueueNegatives | None:
        found = [s for s in self.sources if isinstance(s, IntentionQueueNegatives)]
        return found[0] if found else None

    def _link_momentum_intentions(self) -> None:
        """Momentum intention queues cache what the main momentum queue's tower encodes;
        that source's `extra_loss` must run first in the step (it comes first)."""
        intentions = self._intention_source()
        if intentions is None or intentions.mode != "momentum":
            return
        before = self.sources[: self.sources.index(intentions)]
        queues = [s for s in before if isinstance(s, MomentumQueueNegatives)]
        if not queues:
            raise ValueError(
                f"{intentions.name}: momentum intention queues need a MomentumQueueNegatives "
                "source before them (negatives.queue_mode=momentum)"
            )
        intentions.follow(queues[0])

    def intention_vectors(self, query_embeddings: tf.Tensor) -> tf.Tensor:
        """`[batch_size, H, dim]` the users' intention vectors, from their
        `query_embeddings` (Multi-CLRec models only).

        Raises:
          ValueError: the model has no intention vectors.
        """
        source = self._intention_source()
        if source is None:
            raise ValueError("this model has no intention vectors (negatives.intentions=0)")
        return source.intention_vectors(query_embeddings)

    @property
    def intention_layers(self) -> list[tf.keras.layers.Layer]:
        """The layers `intention_vectors` uses (what an export must keep beside the
        query tower); [] for a model without intentions."""
        source = self._intention_source()
        return source.projections if source is not None else []

    def _encode_indices(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self._normalise(self.candidate_tower.encode_indices(indices, training=training))

    def candidate_embeddings(self, item_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """`[..., dim]` item embeddings for item ids of any shape `[...]` (`training`:
        with the item tower's id dropout, `model.item_id_dropout`)."""
        return self._normalise(self.candidate_tower(item_ids, training=training))

    def _tfrs_loss(self, query: tf.Tensor, positive: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        probability = None
        if self._click_shares is not None:
            probability = by_index(self._click_shares, ids)
        return self.task(
            query,
            positive,
            # Catalog indices: TFRS compares the [batch, batch] ids to remove accidental
            # hits, and on strings that took longer than the rest of the step.
            candidate_ids=ids,
            candidate_sampling_probability=probability,
            compute_metrics=False,
        )

    def _apply_corrections(
        self, batch: Batch, sampled: list[tuple[NegativeSource, Candidates]]
    ) -> tf.Tensor | None:
        """Sets each corrected source's log_q to the mixture proposal; returns the positive's."""
        corrected = [s for s in self.sources if s.corrected]
        if not corrected:
            return None

        def log_q(ids: tf.Tensor) -> tf.Tensor:
            counts = tf.add_n([s.expected_count(ids, batch) for s in corrected])
            return tf.math.log(counts + _EPSILON)

        for source, candidate in sampled:
            if source.corrected:
                candidate.log_q = log_q(candidate.ids)
        return log_q(batch.positive_ids)

    def _propensity_loss(
        self, batch: Batch, groups: dict[str, Candidates]
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Trains both heads (`PropensityNetwork`) and sets the IPW weights of the Space A
        and B negatives; returns (the heads' loss, the clicks' weights or None)."""
        masks = {
            g: losses.candidate_mask(batch.positive_ids, c, self._remove_accidental_hits)
            for g, c in groups.items()
        }
        loss_er, loss_re, weights = self.propensity_network(batch, groups, masks)
        positive_weight = weights.pop("positive", None)
        if positive_weight is not None:
            self._track("ipw_positive_mean", tf.reduce_mean(positive_weight))
        for group, group_weights in weights.items():
            groups[group].weight = group_weights
            valid = tf.boolean_mask(group_weights, masks[group])
            self._track(f"ipw_{group}_mean", tf.reduce_mean(valid))
            self._track(f"ipw_{group}_max", tf.reduce_max(tf.concat([valid, [0.0]], 0)))
            tf.summary.histogram(f"ipw/{group}", valid, step=self._train_counter)
        self._track("loss_er", loss_er)
        self._track("loss_re", loss_re)
        loss = self._lambdas.get("ER", 1.0) * loss_er + self._lambdas.get("RE", 1.0) * loss_re
        return loss, positive_weight

    def _share_denominator(self, batch: Batch, candidates: list[Candidates]) -> None:
        """`losses.share_denominator` with the spaces' sizes this batch's rows carry."""
        groups = {c.group for c in candidates} & set(SIZE_FEATURES)
        if groups:
            sizes = {g: batch.features[SIZE_FEATURES[g]] for g in groups}
            losses.share_denominator(
                batch.positive_ids, candidates, sizes, self._remove_accidental_hits
            )

    def _mimic_loss(self, features: dict[str, tf.Tensor], batch: Batch) -> tf.Tensor:
        """DAT's adaptive-mimic loss: augmented vectors chase the other side's embedding."""
        user_vector = self.query_tower.augmented_vector(features)
        item_vector = self.candidate_tower.augmented_vector(batch.positive_ids)
        loss = tf.reduce_sum(tf.square(user_vector - tf.stop_gradient(batch.positive)))
        loss += tf.reduce_sum(tf.square(item_vector - tf.stop_gradient(batch.query)))
        self._track("loss_mimic", loss)
        return self._mimic_weight * loss

    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """TFRS's step (`_scaled_step` under mixed precision), counting the examples."""
        if isinstance(self.optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
            metrics = self._scaled_step(inputs)
        else:
            metrics = super().train_step(inputs)
        # After the step: with static batch shapes (training.drop_remainder) the count is
        # a constant, and without this dependency it ran even in the step whose read
        # found the end of the data (Keras's first epoch, of unknown length).
        with tf.control_dependencies(tf.nest.flatten(metrics)):
            self.examples_read.assign_add(tf.shape(inputs["item_id"], out_type=tf.int64)[0])
        return metrics

    def _scaled_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """TFRS's step with loss scaling when the optimizer is a LossScaleOptimizer
        (training.mixed_precision): TFRS's own step applies gradients unscaled."""
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
            total = loss + regularization
            scaled = self.optimizer.get_scaled_loss(total)
        gradients = self.optimizer.get_unscaled_gradients(
            tape.gradient(scaled, self.trainable_variables)
        )
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(loss=loss, regularization_loss=regularization, total_loss=total)
        return metrics

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        features = self.index_features(features)
        ids = features["item_id"]
        query = self.query_embeddings(features)
        positive = self.candidate_embeddings(ids, training=training)
        if self._loss == "tfrs":
            return self._tfrs_loss(query, positive, ids)
        batch = Batch(
            features,
            query,
            ids,
            positive,
            functools.partial(self._encode_indices, training=training),
            self._num_items,
            self.candidate_tower.item_index,
            training,
        )
        # A source that adds a loss of its own (Multi-CLRec) may contribute no candidates.
        sampled = [(source, source.sample(batch)) for source in self.sources]
        sampled = [(source, c) for source, c in sampled if c is not None]
        candidates = [c for _, c in sampled]
        positive_log_q = self._apply_corrections(batch, sampled)
        positive_log_propensity = None
        if self.exposure is not None:
            positive_log_propensity = self.exposure(ids)
            for candidate in candidates:
                candidate.log_propensity = self.exposure(candidate.ids)
        total = tf.constant(0.0)
        positive_weight = None  # the clicks' IPW weights (uma2.weigh_positives)
        if self.propensity_network is not None:
            groups = {c.group: c for c in candidates if c.group in ("A", "B", "C")}
            propensity_loss, positive_weight = self._propensity_loss(batch, groups)
            total += propensity_loss
        if self._loss == "softmax":
            self._share_denominator(batch, candidates)
            main = tf.reduce_sum(
                losses.softmax_loss(
                    query,
                    positive,
                    ids,
                    positive_log_q,
                    candidates,
                    self._temperature,
                    self._remove_accidental_hits,
                    positive_log_propensity,
                )
            )
        else:
            terms = losses.bce_loss(
                query,
                positive,
                ids,
                candidates,
                self._lambdas,
                self._temperature,
                self._remove_accidental_hits,
                positive_log_propensity,
                positive_weight,
            )
            for name, term in terms.items():
                self._track(f"loss_{name}", tf.reduce_sum(term))
            main = tf.add_n([tf.reduce_sum(t) for t in terms.values()])
        self._track("loss_main", main)
        total += main
        for source in self.sources:
            extra = source.extra_loss(batch)
            if extra is not None:
                self._track(f"loss_{source.name}", extra)
                total += extra
        if self._mimic_weight and self.query_tower.augmented:
            total += self._mimic_loss(features, batch)
        if training:
            for source in self.sources:
                source.update(batch)
        return total

    def get_config(self) -> dict[str, Any]:
        serialize = tf.keras.utils.serialize_keras_object
        return {
            "query_tower": serialize(self.query_tower),
            "candidate_tower": serialize(self.candidate_tower),
            "sources": [serialize(s) for s in self.sources],
            "exposure": serialize(self.exposure) if self.exposure is not None else None,
            "loss": self._loss,
            "similarity": self._similarity,
            "temperature": self._config_temperature,
            "remove_accidental_hits": self._remove_accidental_hits,
            "item_probabilities": json.loads(self._item_probabilities) or None,
            "lambdas": self._lambdas,
            "propensity_network": (
                serialize(self.propensity_network) if self.propensity_network is not None else None
            ),
            "mimic_weight": self._mimic_weight,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TwoTowerModel":
        config = dict(config)
        deserialize = tf.keras.utils.deserialize_keras_object
        for name in ("query_tower", "candidate_tower"):
            config[name] = deserialize(config[name])
        config["sources"] = [deserialize(s) for s in config.get("sources", [])]
        for name in ("exposure", "propensity_network"):
            if config.get(name) is not None:
                config[name] = deserialize(config[name])
        return cls(**config)
