"""MomentumQueueNegatives: CLRec's cached queue kept consistent by a momentum item tower.

A queue of cached item embeddings (no gradient, no re-encoding: the cheap CLRec) lets the
model lower its loss without learning preferences: the items of the batch are encoded by
the current tower, the queued ones by the towers of up to queue/batch steps ago, and the
user tower learns to tell "fresh" from "stale" (on MovieLens-100K the cached queue fell
to HR@100 0.03, docs/negatives.md). MoCo's answer (He et al., 2020) is consistency: the
queue holds embeddings from a momentum copy of the item tower, whose weights follow the
trained tower slowly (w_m <- m w_m + (1 - m) w), and the queue's contrastive term scores
the positive with that same copy, so positive and negatives come from one encoder and
differ only in what the user likes. That term trains the user tower (its item side is
constant); the in-batch softmax of the main loss trains both towers as before.

Each training step first moves the momentum tower toward the trained one (MoCo's order:
move, then encode), then scores and enqueues the batch's positives with it. The
embedding tables (item ids, clusters, each item feature's tokens: they grow with the
catalog or a feature's vocabulary) are moved lazily, only the rows this batch's positives
read, by all the steps since their last move at once (w_m <- w + m^steps (w_m - w)).
That equals the dense update exactly when a trained row only changes in the steps where
one of its items is a positive (in-batch negatives with Adagrad or SGD, whose sparse
updates touch only the batch's rows); rows that other sources or a dense optimizer also
move catch up at their next positive. Only the layers above the tables (their size set
by the model, not the data) move densely. Either way the cost per step is independent
of the catalog and the vocabularies. The queue holds int64 catalog indices, not strings
(all-gathered as numbers).
"""

from typing import Any

import tensorflow as tf

from trainer import losses
from trainer.negatives.candidates import Batch, Candidates
from trainer.negatives.draws import step_counter
from trainer.negatives.item_queue import ItemQueue
from trainer.negatives.queue import gather_across_replicas
from trainer.negatives.source import NegativeSource

_ONLY_FIRST = tf.VariableAggregation.ONLY_FIRST_REPLICA


@tf.keras.utils.register_keras_serializable(package="twotower")
class MomentumQueueNegatives(NegativeSource):
    """A FIFO queue of momentum-encoded items and its own contrastive loss.

    Args:
      size: queued items (CLRec: 10x the batch).
      dim: embedding size.
      momentum: m of the momentum tower's update.
      temperature: the logits' divisor (the model's, for cosine similarity).
      cosine: L2-normalise the momentum embeddings as the model does.
    """

    def __init__(
        self,
        size: int,
        dim: int,
        momentum: float = 0.99,
        temperature: float = 1.0,
        cosine: bool = False,
        **kwargs: Any,
    ):
        super().__init__(count=size, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self._dim = dim
        self._momentum = momentum
        self._temperature = temperature
        self._cosine = cosine
        self._indices = ItemQueue(size, mode="indices", name="indices")
        self._embeddings = ItemQueue(size, dim, mode="embeddings", name="embeddings")
        self._tower = None  # the momentum copy, made by `attach`
        self._encoded = None  # this step's positives through it (`extra_loss`)
        self._step = step_counter()

    def bind(self, candidate_tower: tf.keras.Model) -> None:
        """Makes the momentum copy of the model's item tower (both built first)."""
        probe_ids = tf.constant(candidate_tower.catalog[:1])
        candidate_tower(probe_ids)

        def momentum_variable(next_creator: Any, **kwargs: Any) -> tf.Variable:
            # Every replica moves it the same way (all-gathered positives): keep one.
            kwargs.update(trainable=False, aggregation=_ONLY_FIRST)
            return next_creator(**kwargs)

        with tf.variable_creator_scope(momentum_variable):
            tower = type(candidate_tower).from_config(candidate_tower.get_config())
            tower(probe_ids)
        tower.trainable = False
        self._tower = tower
        probe = tf.constant([0], tf.int64)
        trained = {name: table for name, (table, _) in candidate_tower.table_rows(probe).items()}
        tables = {id(v) for v in trained.values()}
        pairs = list(zip(tower.weights, candidate_tower.weights, strict=True))
        self._follow(
            candidate_tower.table_rows,
            [(mine, theirs) for mine, theirs in pairs if id(theirs) not in tables],
            {name: table for name, (table, _) in tower.table_rows(probe).items()},
        )
        self._last_moved = {
            name: self.add_weight(
                name=f"last_moved_{name}",
                shape=[table.shape[0]],
                dtype=tf.int64,
                initializer="zeros",
                trainable=False,
                aggregation=_ONLY_FIRST,
            )
            for name, table in trained.items()
        }
        for mine, theirs in pairs:
            mine.assign(theirs)

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _follow(
        self,
        trained_rows: Any,
        dense: list[tuple[tf.Variable, tf.Variable]],
        tables: dict[str, tf.Variable],
    ) -> None:
        """Keeps what the momentum tower follows without tracking it: the trained tower's
        variables belong to the model, and a source that tracked them would list them as
        its own trainable weights and save them twice. `tables`: the momentum tower's
        own tables by name (tracked through the tower), which read the trained tables'
        rows: a step gathers the rows once, for both."""
        self._trained_rows = trained_rows
        self._dense = dense
        self._tables = tables

    def _encode(self, item_ids: tf.Tensor) -> tf.Tensor:
        embeddings = tf.stop_gradient(self._tower(item_ids))
        return tf.math.l2_normalize(embeddings, axis=-1) if self._cosine else embeddings

    def sample(self, batch: Batch) -> None:
        return None

    def extra_loss(self, batch: Batch) -> tf.Tensor:
        if batch.training:  # bring the momentum tower to this step before encoding with it
            self._move(gather_across_replicas(self._indices_of(batch)))
        queued, valid = self._embeddings.contents(0)
        indices, _ = self._indices.contents(0)
        encoded = self._encode(batch.positive_ids)
        self._remember(encoded)  # what `update` enqueues: one momentum pass per step
        # The shared softmax: the temperature on the query, never-filled slots in an
        # [n] bias, the row's own item masked, one log-sum-exp that reuses its exponentials
        # (written inline, the concat, the divisions, the mask and TF's log-sum-exp
        # gradient were each a pass over the [batch, queue] scores).
        queue = Candidates(self.name, "other", indices, queued, valid=valid)
        per_row = losses.softmax_loss(
            batch.query,
            encoded,
            self._indices_of(batch),
            None,
            [queue],
            temperature=self._temperature,
        )
        return tf.reduce_sum(per_row)

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _remember(self, encoded: tf.Tensor) -> None:
        self._encoded = encoded

    @property
    def encoded_positives(self) -> tf.Tensor:
        """`[batch, dim]` this step's positives through the momentum tower (computed by
        `extra_loss`; Multi-CLRec's momentum intention queues score and enqueue them)."""
        if self._encoded is None:
            raise ValueError(f"{self.name}: extra_loss encodes the positives; call it first")
        return self._encoded

    def _move(self, indices: tf.Tensor) -> None:
        """Moves the momentum tower toward the trained one (see the module docstring)."""
        step = self._step + 1
        for mine, theirs in self._dense:
            mine.assign(self._momentum * mine + (1.0 - self._momentum) * theirs)
        for name, (trained, rows) in self._trained_rows(indices).items():
            table, last = self._tables[name], self._last_moved[name]
            rows, _ = tf.unique(rows)
            current = tf.gather(trained, rows)
            steps = tf.cast(step - tf.gather(last, rows), tf.float32)[:, tf.newaxis]
            moved = current + tf.pow(self._momentum, steps) * (tf.gather(table, rows) - current)
            table.scatter_update(tf.IndexedSlices(moved, rows))
            last.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), step), rows))
        self._step.assign(step)

    @staticmethod
    def _indices_of(batch: Batch) -> tf.Tensor:
        return tf.cast(batch.item_index(batch.positive_ids), tf.int64)

    def update(self, batch: Batch) -> None:
        """Enqueues the positives as the momentum tower (moved by `extra_loss`) sees them:
        the embeddings `extra_loss` computed in this step (the model calls both)."""
        self._embeddings.enqueue(gather_across_replicas(self._encoded))
        self._indices.enqueue(gather_across_replicas(self._indices_of(batch)))

    def get_config(self) -> dict[str, Any]:
        config = {
            **super().get_config(),
            "size": self._count,
            "dim": self._dim,
            "momentum": self._momentum,
            "temperature": self._temperature,
            "cosine": self._cosine,
        }
        config.pop("count")
        return config
