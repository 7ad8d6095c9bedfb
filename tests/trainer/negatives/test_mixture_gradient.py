"""Mixed negatives, proven: the corrected sampled softmax estimates the full softmax.

On a catalog small enough for the full softmax, the model's own loss with in-batch
negatives (static logQ) mixed with uniform corpus negatives, the mixture proposal's
correction on every candidate, is averaged over many draws of the corpus negatives and
its gradient set beside the full softmax's, on the same batches.
"""

import numpy as np
import tensorflow as tf

from trainer.model import TwoTowerModel
from trainer.negatives.corpus import CorpusNegatives
from trainer.negatives.in_batch import InBatchNegatives
from trainer.towers import CandidateTower, QueryTower

NUM_ITEMS, NUM_USERS, BATCH = 40, 20, 32
ITEM_IDS = [f"i{k}" for k in range(NUM_ITEMS)]
USER_IDS = [f"u{k}" for k in range(NUM_USERS)]
SHARE = np.arange(1, NUM_ITEMS + 1, dtype=np.float64) ** -1.1
SHARE /= SHARE.sum()  # the click shares: a popularity-skewed in-batch proposal


def _model(corpus: int) -> TwoTowerModel:
    tf.keras.utils.set_random_seed(0)
    towers = {"embedding_dim": 6, "hidden_units": [], "output_dim": 6}
    query = QueryTower(USER_IDS, ITEM_IDS, {}, **towers)
    candidate = CandidateTower(ITEM_IDS, ["c"] * NUM_ITEMS, {}, **towers)
    sources = [InBatchNegatives("static", dict(zip(ITEM_IDS, SHARE, strict=True)), name="in_batch")]
    if corpus:
        sources.append(CorpusNegatives(corpus, corrected=True, name="corpus"))
    return TwoTowerModel(query, candidate, sources=sources, loss="softmax")


def _batches(count: int, seed: int = 1) -> list[dict[str, tf.Tensor]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "user_id": tf.constant(rng.choice(USER_IDS, BATCH)),
            "history": tf.fill([BATCH, 1], ""),
            "item_id": tf.constant(rng.choice(ITEM_IDS, BATCH, p=SHARE)),
        }
        for _ in range(count)
    ]


def _full_softmax(model: TwoTowerModel, features: dict[str, tf.Tensor]) -> tf.Tensor:
    logits = tf.matmul(
        model.query_embeddings(features),
        model.candidate_embeddings(tf.constant(ITEM_IDS)),
        transpose_b=True,
    )
    positive = model.candidate_tower.item_index(features["item_id"])
    return tf.reduce_sum(
        tf.reduce_logsumexp(logits, axis=1) - tf.gather(logits, positive, batch_dims=1)
    )


def _mean_gradients(model, batches, loss, draws):
    total = None
    for features in batches:
        for _ in range(draws):
            with tf.GradientTape() as tape:
                value = loss(features)
            grads = [
                tf.convert_to_tensor(g) for g in tape.gradient(value, model.trainable_variables)
            ]
            flat = tf.concat([tf.reshape(g, [-1]) for g in grads], 0).numpy()
            total = flat if total is None else total + flat
    return total / (len(batches) * draws)


def _relative_error(corpus: int, draws: int) -> float:
    """|mean sampled gradient - full gradient| / |full gradient| on 10 fixed batches."""
    model = _model(corpus)
    batches = _batches(10)
    model.compute_loss(batches[0])  # builds the variables
    full = _mean_gradients(model, batches, lambda f: _full_softmax(model, f), 1)
    # training=True: each call ends as a training step does, so the corpus source's step
    # (the seed of its stateless draws) moves on and every call draws afresh.
    sampled = _mean_gradients(model, batches, lambda f: model.compute_loss(f, training=True), draws)
    return float(np.linalg.norm(sampled - full) / np.linalg.norm(full))


def test_corrected_sampled_softmax_gradient_matches_the_full_softmax():
    # Measured: 2.5% with 128 uniform corpus negatives mixed in, averaged over 16 draws
    # per batch (3.0% over 48; over 4 the draws' own noise still shows: 5.4%) (the
    # mixture proposal corrects every candidate); in-batch negatives alone (31 per row,
    # drawn from a skewed proposal that rarely reaches the tail) stay 19% off.
    mixed = _relative_error(corpus=128, draws=16)
    assert mixed < 0.05
    assert _relative_error(corpus=0, draws=1) > 3 * mixed
