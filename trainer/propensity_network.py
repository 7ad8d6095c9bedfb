"""UMA²'s negative samples debias network (NSDN), trained on what the spaces stand for.

Two heads share the towers' embeddings: Entire→Recall predicts p1 = P(recalled | user,
item), Recall→Exposure p2 = P(exposed | recalled, user, item). They learn from the
samples a training row holds: its clicked item, up to `data.num_a` of the request's
exposed-not-clicked items (Space A), up to `data.num_b` recalled-not-exposed (Space B),
and items of the catalog (Space C). Those are subsamples at very different rates: one
of |A| exposed items, four of |B| recalled ones, twenty of the ~N catalog items that were
not recalled. A head fitted to the raw sample would learn probabilities of the sample
(the recalled share of a row is about 6 of 26, not |recalled| of N). So every sampled
item is weighted by the inverse of its sampling rate, from the space sizes the Example
carries (`num_space_a`, `num_space_b`) and the catalog size:

  ER head: clicked 1, A |A|/kept_A (label 1), B |B|/kept_B (label 1), C (N - |R|)/kept_C (0)
  RE head: clicked 1, A |A|/kept_A (label 1), B |B|/kept_B (label 0)

with |R| = 1 + |A| + |B| the request's recalled items (its clicks counted as one), so the
weighted losses estimate the population's, and sigmoid(head) estimates p1 and p2 of the
legacy system itself (tests/trainer/test_propensity_network.py checks recovery on
synthetic data, and `trainer.propensity_check` against the simulator's truth). The
weights are normalised to the number of sampled terms, so the loss keeps the scale of an
unweighted one. When the loss has no Space C source, the ER head draws `head_negatives`
catalog items of its own, shared by the batch.

The heads read the towers' embeddings but, unless `train_towers`, do not train them: what
predicts the legacy system's recall and exposure is the popularity and exposure bias the
retrieval embedding must not learn (the bench measured what sharing costs, docs/uma2.md).

Beside the two embeddings, each head sees the item's logged exposure rate (log of its
training exposures per request, `trainer.exposure`) where the dataset counted exposures:
the legacy recall and ranker lean on popularity, which a debiased item embedding is
trained not to carry.

IPW: a Space B negative is weighted 1/p1, Space A 1/(p1·p2), clipped to [1, max_weight].
With `weigh_positives` the click is weighted too, by 1/(p1·p2) of its own pair: a click is
only seen where the legacy system showed the item, just as an A negative is, and weighting
one class alone tilts the loss against every item it rarely shows (by log 1/p).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from common.contracts import NUM_SPACE_A, NUM_SPACE_B
from trainer.exposure import ExposurePropensity
from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.draws import draw_seed, uniform_indices
from trainer.propensity import PropensityHead, ipw_weights

_CLICK = "positive"
# Each head's label for the pairs of each group: the click and the A and B items were
# recalled (ER 1), C's were not; of the recalled, the click and A were exposed (RE 1).
_ER_LABELS = {_CLICK: 1.0, "A": 1.0, "B": 1.0, "C": 0.0}
_RE_LABELS = {_CLICK: 1.0, "A": 1.0, "B": 0.0}


@dataclasses.dataclass
class _RowPairs:
    """The (row, item) pairs a head scores: each row's items of `groups`, side by side.

    Attributes:
      groups: the groups in column order.
      widths: each group's number of columns.
      items: `[batch, n, dim]` their embeddings.
      features: `[batch, n, f]` the heads' item features, or None.
    """

    groups: list[str]
    widths: list[tf.Tensor]
    items: tf.Tensor
    features: tf.Tensor | None

    def before(self, group: str) -> "_RowPairs":
        """The pairs of the groups before `group` (all of them if it is absent)."""
        if group not in self.groups:
            return self
        count = self.groups.index(group)
        width = tf.add_n(self.widths[:count])
        features = None if self.features is None else self.features[:, :width]
        return _RowPairs(self.groups[:count], self.widths[:count], self.items[:, :width], features)


def _weighted_bce(terms: list[tuple[tf.Tensor, float | tf.Tensor, tf.Tensor]]) -> tf.Tensor:
    """Σ w·bce over (logits, labels, weights) terms, the labels and weights broadcast to
    the logits, the weights rescaled to sum to the number of terms (weights of 0 are
    masked slots)."""
    total, weight_sum, count = 0.0, 0.0, 0.0
    for logits, label, weights in terms:
        weights = tf.broadcast_to(weights, tf.shape(logits))
        labels = tf.broadcast_to(tf.cast(label, logits.dtype), tf.shape(logits))
        values = tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)
        total += tf.reduce_sum(values * weights)
        weight_sum += tf.reduce_sum(weights)
        count += tf.reduce_sum(tf.cast(weights > 0, tf.float32))
    return total * count / tf.maximum(weight_sum, 1e-12)


@tf.keras.utils.register_keras_serializable(package="twotower")
class PropensityNetwork(tf.keras.layers.Layer):
    """The two propensity heads, their sampling-rate-weighted losses and the IPW weights.

    Args:
      hidden_units: each head's MLP.
      max_weight: IPW weights are clipped to [1, max_weight].
      self_normalize: divide the IPW weights by their batch mean.
      head_negatives: catalog items the ER head draws when the loss has no Space C.
      head_space_c: the ER head learns from the first k of each row's Space C draws
        (uniform draws: a uniform subsample, weighted by its own sampling rate); 0: all.
      seed: seed of those draws.
      item_exposure: the items' logged exposure rates, a head input; None: embeddings only.
      weigh_positives: also return the clicks' IPW weights (key "positive").
      train_towers: let the heads' losses reach the towers' embeddings; False: the heads
        read them without gradient.
      num_items: the catalog's size: the heads' own item embedding has a row per catalog
        item and row 0 for none (padding); 0: no such embedding.
      item_dim: its size.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (64,),
        max_weight: float = 20.0,
        self_normalize: bool = False,
        head_negatives: int = 16,
        seed: int = 0,
        item_exposure: ExposurePropensity | None = None,
        weigh_positives: bool = False,
        train_towers: bool = False,
        num_items: int = 0,
        item_dim: int = 8,
        head_space_c: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._num_items = num_items
        self._item_dim = item_dim
        # The heads' own item embedding: what the legacy system learned about an item,
        # which the towers' embeddings, kept free of it, no longer tell them. One row per
        # catalog index (+ 1), read by index: no two items share a row, as they did when
        # the rows were hash buckets of the id strings (2x the catalog, and still about two
        # in five items colliding).
        self.item_embedding = (
            tf.keras.layers.Embedding(num_items + 1, item_dim, name="head_item_embedding")
            if num_items > 0 and item_dim > 0
            else None
        )
        self._weigh_positives = weigh_positives
        self._train_towers = train_towers
        self.item_exposure = item_exposure
        self._hidden_units = list(hidden_units)
        self._max_weight = max_weight
        self._self_normalize = self_normalize
        self._head_negatives = head_negatives
        self._head_space_c = head_space_c
        self._seed = seed
        self.recall_head = PropensityHead(hidden_units, name="entire_to_recall")
        self.exposure_head = PropensityHead(hidden_units, name="recall_to_exposure")
        # Draws are (seed, draw count)-seeded: a resumed run draws what an unbroken one did.
        self._draws = self.add_weight(
            name="draws",
            shape=[],
            dtype=tf.int64,
            initializer="zeros",
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    def bind(self, catalog: list[str]) -> None:
        """Tables by catalog index (the step's items are indices): the exposure
        propensities."""
        if self.item_exposure is not None:
            self.item_exposure.bind(catalog)
        if self.item_embedding is not None and len(catalog) != self._num_items:
            raise ValueError(
                f"{self.name}: an item embedding of {self._num_items} catalog rows cannot "
                f"serve a catalog of {len(catalog)} items"
            )

    def _features(self, item_ids: tf.Tensor) -> tf.Tensor | None:
        """Catalog indices (int64, -1: none; or id strings when the heads have no item
        embedding) -> head inputs."""
        features = []
        if self.item_exposure is not None:
            features.append(self.item_exposure(item_ids)[..., tf.newaxis])
        if self.item_embedding is not None:
            if not item_ids.dtype.is_integer:
                raise TypeError(
                    f"{self.name}: the heads' item embedding is read by catalog index; got "
                    f"{item_ids.dtype.name} item ids (map them with the item tower's "
                    "`item_index`)"
                )
            features.append(self.item_embedding(tf.cast(item_ids, tf.int64) + 1))
        # float32 throughout: under mixed precision the embedding's output is float16.
        return tf.concat([tf.cast(f, tf.float32) for f in features], -1) if features else None

    def _logits(
        self, head: PropensityHead, users: tf.Tensor, items: tf.Tensor, features: tf.Tensor | None
    ) -> tf.Tensor:
        if not self._train_towers:
            users, items = tf.stop_gradient(users), tf.stop_gradient(items)
        return head(users, items, features)

    def probabilities(
        self, users: tf.Tensor, items: tf.Tensor, item_ids: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(p1, p2) of user embeddings `[..., d]` and item embeddings `[..., d]` of the
        items `item_ids` `[...]` (the broadcast shape but the last axis): int64 catalog
        indices, or id strings when the heads have no item embedding."""
        features = self._features(item_ids)
        return (
            tf.sigmoid(self._logits(self.recall_head, users, items, features)),
            tf.sigmoid(self._logits(self.exposure_head, users, items, features)),
        )

    def _own_space_c(self, batch: Batch) -> Candidates:
        seed = draw_seed(self._seed, self._draws.assign_add(1), "head_space_c")
        ids = uniform_indices([self._head_negatives], batch.num_items, seed)
        return Candidates("head_space_c", "C", ids, batch.encode(ids))

    def call(
        self, batch: Batch, groups: dict[str, Candidates], masks: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
        """Trains both heads on the row's spaces and weighs the A and B negatives.

        Args:
          batch: the training batch (features carry num_space_a, num_space_b).
          groups: the loss's candidates of groups "A", "B", "C" (any may be absent).
          masks: `[batch, n]` (or `[batch, 1, n]`-broadcastable) valid slots per group.

        Returns:
          (loss_er, loss_re, {"A": weights, "B": weights} for the groups present, and
          "positive": `[batch]` the clicks' weights with `weigh_positives`).
        """
        users = batch.query[:, tf.newaxis, :]
        num_a = tf.cast(batch.features[NUM_SPACE_A], tf.float32)[:, tf.newaxis]
        num_b = tf.cast(batch.features[NUM_SPACE_B], tf.float32)[:, tf.newaxis]
        masks = {g: tf.cast(m, tf.float32) for g, m in masks.items()}
        spaces = dict(groups)
        k = self._head_space_c
        if k and "C" in spaces and not spaces["C"].shared:
            # Per-row pairs are the heads' cost; the rate weights below count the kept.
            c = spaces["C"]
            spaces["C"] = Candidates(c.name, "C", c.ids[:, :k], c.embeddings[:, :k])
            masks["C"] = masks["C"][:, :k]
        if "C" not in spaces:
            spaces["C"] = self._own_space_c(batch)
            masks["C"] = tf.ones([tf.shape(users)[0], self._head_negatives])

        def rate_weight(group: str, size: tf.Tensor) -> tf.Tensor:
            kept = tf.reduce_sum(masks[group], axis=1, keepdims=True)
            return masks[group] * size / tf.maximum(kept, 1.0)

        num_items = float(batch.num_items)
        sizes = {"A": num_a, "B": num_b, "C": tf.maximum(num_items - 1.0 - num_a - num_b, 1.0)}
        weights = {g: rate_weight(g, sizes[g]) for g in spaces}
        weights[_CLICK] = tf.ones_like(num_a)

        # Each head scores every row's pairs in one pass: the click (column 0), then the
        # row's A, B and C candidates, whose item features are looked up once for both
        # heads. Recall->Exposure reads the click, A and B: the columns before C.
        row_groups = [_CLICK] + [g for g in "ABC" if g in spaces and not spaces[g].shared]
        ids = [batch.positive_ids[:, tf.newaxis]] + [spaces[g].ids for g in row_groups[1:]]
        items = [batch.positive[:, tf.newaxis]] + [spaces[g].embeddings for g in row_groups[1:]]
        pairs = _RowPairs(
            row_groups,
            [tf.shape(i)[1] for i in ids],
            tf.concat(items, 1),
            self._features(tf.concat(ids, 1)),
        )
        er, er_term = self._head_pass(self.recall_head, users, pairs, _ER_LABELS, weights)
        er_terms = [er_term]
        if "C" not in row_groups:  # drawn once for the batch: `[n]`, a pass of its own
            shared = spaces["C"]
            logits = self._logits(
                self.recall_head, users, shared.embeddings, self._features(shared.ids)
            )
            er["C"] = logits
            er_terms.append((logits, 0.0, weights["C"]))
        re, re_term = self._head_pass(
            self.exposure_head, users, pairs.before("C"), _RE_LABELS, weights
        )
        ipw = {}
        for group in ("A", "B"):
            if group in groups:
                ipw[group] = ipw_weights(
                    tf.sigmoid(er[group]),
                    tf.sigmoid(re[group]) if group == "A" else None,
                    self._max_weight,
                    masks[group] > 0,
                    self._self_normalize,
                )
        if self._weigh_positives:
            ipw["positive"] = ipw_weights(
                tf.sigmoid(er[_CLICK][:, 0]),
                tf.sigmoid(re[_CLICK][:, 0]),
                self._max_weight,
                tf.ones_like(batch.positive_ids, tf.bool),
                self._self_normalize,
            )
        return _weighted_bce(er_terms), _weighted_bce([re_term]), ipw

    def _head_pass(
        self,
        head: PropensityHead,
        users: tf.Tensor,
        pairs: _RowPairs,
        labels: dict[str, float],
        weights: dict[str, tf.Tensor],
    ) -> tuple[dict[str, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
        """One head over every row's pairs: (its logits by group, its bce term)."""
        logits = self._logits(head, users, pairs.items, pairs.features)
        by_group = dict(zip(pairs.groups, tf.split(logits, pairs.widths, axis=1), strict=True))
        column_labels = [tf.fill(tf.shape(weights[g]), labels[g]) for g in pairs.groups]
        column_weights = [weights[g] for g in pairs.groups]
        return by_group, (logits, tf.concat(column_labels, 1), tf.concat(column_weights, 1))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden_units": self._hidden_units,
            "max_weight": self._max_weight,
            "self_normalize": self._self_normalize,
            "weigh_positives": self._weigh_positives,
            "train_towers": self._train_towers,
            "num_items": self._num_items,
            "item_dim": self._item_dim,
            "head_negatives": self._head_negatives,
            "head_space_c": self._head_space_c,
            "seed": self._seed,
            "item_exposure": (
                tf.keras.utils.serialize_keras_object(self.item_exposure)
                if self.item_exposure is not None
                else None
            ),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PropensityNetwork":
        config = dict(config)
        if config.get("item_exposure") is not None:
            config["item_exposure"] = tf.keras.utils.deserialize_keras_object(
                config["item_exposure"]
            )
        return cls(**config)
