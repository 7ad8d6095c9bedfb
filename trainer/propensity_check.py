"""How well a run's propensity heads know the legacy system: against the simulator's truth.

For the users and items of the simulator's propensities.jsonl, the heads' p1 and p2 are
set beside the true P(recalled) and P(exposed | recalled) (`simulator.propensities`):
Spearman's rank correlation (does the head order pairs right?) and calibration (the
mean absolute difference, and the ratio of the mean predicted to the mean true
probability: 1 is calibrated). p2 is judged on the pairs the system recalled at least
MIN_RECALLS times, where its own exposure share is measured well enough to compare.
"""

from typing import Any

import numpy as np
import tensorflow as tf

from trainer.evaluate import item_embeddings, simulated_user_features, train_click_history
from trainer.ground_truth import load_ground_truth, load_propensities
from trainer.train import load_run

# p2's truth is the exposed share of an item's recalls among `propensity_requests`
# simulated requests: at 10 recalls a share near 0.3 is known only to ±0.15, as wide as
# p2's spread across pairs, so the rank correlation would measure the truth's noise.
MIN_RECALLS = 30


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties get their average rank)."""

    def ranks(values: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return ((ends - counts + ends - 1) / 2)[inverse]

    return float(np.corrcoef(ranks(np.asarray(x)), ranks(np.asarray(y)))[0, 1])


def _agreement(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "pairs": int(len(truth)),
        "spearman": spearman(predicted, truth),
        "mean_abs_error": float(np.mean(np.abs(predicted - truth))),
        "mean_ratio": float(predicted.mean() / max(truth.mean(), 1e-12)),
    }


def check_propensities(
    run_dir: str, simulator_dir: str, min_recalls: int = MIN_RECALLS
) -> dict[str, Any]:
    """{"p1": {...}, "p2": {...}}: the heads' agreement with the simulator's truth.

    Raises:
      ValueError: the run was trained without propensity heads.
      FileNotFoundError: the folder has no propensities.jsonl.
    """
    config, dataset, model = load_run(run_dir)
    if model.propensity_network is None:
        raise ValueError(f"{run_dir}: no propensity heads (train with uma2.propensity=true)")
    truth = load_ground_truth(simulator_dir)
    rows = load_propensities(simulator_dir)
    users = [row["user_id"] for row in rows]
    history = train_click_history(dataset)
    features = simulated_user_features(users, truth, history, config.data.history_length)

    inputs = {
        name: tf.constant(features[name].tolist(), dtype=tf.string)
        for name in model.query_tower.feature_names
    }
    queries = model.query_embeddings(inputs).numpy()
    row_of = {item: i for i, item in enumerate(dataset.item_ids)}
    items = item_embeddings(model, dataset.item_ids)
    predicted, true_recall, true_expose, recall_counts = [], [], [], []
    for user, row in enumerate(rows):
        indices = [row_of[i] for i in row["items"]]
        vectors = items[indices]
        p1, p2 = model.propensity_network.probabilities(
            tf.constant(np.broadcast_to(queries[user], vectors.shape)),
            tf.constant(vectors),
            tf.constant(indices, tf.int64),
        )
        predicted.append(np.stack([p1.numpy(), p2.numpy()], axis=1))
        true_recall += row["p_recall"]
        true_expose += [np.nan if e is None else e for e in row["p_expose"]]
        recall_counts += [round(p * row["requests"]) for p in row["p_recall"]]
    predicted = np.concatenate(predicted)
    true_recall, true_expose = np.array(true_recall), np.array(true_expose)
    measured = np.array(recall_counts) >= min_recalls
    return {
        "p1": _agreement(predicted[:, 0], true_recall),
        "p2": _agreement(predicted[measured, 1], true_expose[measured]),
    }
