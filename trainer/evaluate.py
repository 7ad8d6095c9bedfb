"""`twotower evaluate`: exact retrieval over the whole catalog and its metrics.

Every eval user is one query (features of their first eval example); their relevant
items are all their eval clicks. Items the user clicked in the training split are
removed from the candidates unless `exclude_train_clicks` is off. The trained model is
compared with two reference recommenders scored the same way: most-popular (training
clicks per item) and random.
"""

import collections
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from trainer import metrics
from trainer.dataset import Dataset, load_dataset, make_dataset
from trainer.model import TwoTowerModel
from trainer.train import load_run

METRICS_FILE = "metrics.json"
_CHUNK = 1024


def item_embeddings(
    model: TwoTowerModel, item_ids: list[str], batch_size: int = 4096
) -> np.ndarray:
    """`[num_items, dim]` embeddings of `item_ids`, in their order."""
    parts = [
        model.candidate_embeddings(tf.constant(item_ids[i : i + batch_size])).numpy()
        for i in range(0, len(item_ids), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


def _user_clicks(dataset: Dataset, split: str) -> dict[str, list[str]]:
    clicks: dict[str, list[str]] = collections.defaultdict(list)
    for batch in make_dataset(dataset, split, 4096):
        for user, item in zip(batch["user_id"].numpy(), batch["item_id"].numpy(), strict=True):
            clicks[user.decode()].append(item.decode())
    return clicks


def eval_queries(dataset: Dataset) -> tuple[list[str], dict[str, np.ndarray], list[set[str]]]:
    """(user ids, their query features, their eval clicks), one row per eval user."""
    first: dict[str, tuple[int, dict[str, np.ndarray]]] = {}
    relevant: dict[str, set[str]] = collections.defaultdict(set)
    for batch in make_dataset(dataset, "eval", 4096):
        numpy = {k: v.numpy() for k, v in batch.items()}
        for row, user in enumerate(numpy["user_id"]):
            user = user.decode()
            relevant[user].add(numpy["item_id"][row].decode())
            timestamp = int(numpy["timestamp"][row])
            if user not in first or timestamp < first[user][0]:
                first[user] = (timestamp, {k: v[row] for k, v in numpy.items()})
    users = sorted(first)
    features = {}
    for name in first[users[0]][1]:
        rows = [first[u][1][name] for u in users]
        if not isinstance(rows[0], np.ndarray):
            features[name] = np.array(rows)
        else:  # ragged token lists: re-pad to the widest row
            width = max(len(r) for r in rows)
            features[name] = np.array([list(r) + [b""] * (width - len(r)) for r in rows])
    return users, features, [relevant[u] for u in users]


def top_k(
    score_rows: Callable[[slice], np.ndarray],
    num_users: int,
    k: int,
    excluded: list[np.ndarray],
) -> np.ndarray:
    """`[num_users, k]` item indices, best first, never an excluded one.

    Args:
      score_rows: returns the `[rows, num_items]` scores of a slice of users.
      num_users: rows in total.
      k: how many items per user.
      excluded: per user, item indices that must not be returned.
    """
    ranked = []
    for start in range(0, num_users, _CHUNK):
        rows = slice(start, min(start + _CHUNK, num_users))
        scores = np.array(score_rows(rows), dtype=np.float64)
        for offset, items in enumerate(excluded[rows]):
            scores[offset, items] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        ranked.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(ranked)


def evaluate_run(run_dir: str, *, on: str | None = None, write: bool = True) -> dict[str, Any]:
    """Evaluates a trained run on the eval split of its dataset, or of dataset `on`
    (which must describe the same catalog).

    Returns:
      {"num_users", "num_items", "ks", "methods": {method: {"hit_rate@10": ...}}};
      also written to `run_dir/metrics.json` when `write`.
    """
    config, dataset, model = load_run(run_dir)
    if on is not None:
        dataset = load_dataset(on)
    ks = sorted(config.evaluation.ks)
    index = {item: i for i, item in enumerate(dataset.item_ids)}
    users, features, relevant_ids = eval_queries(dataset)
    relevant = [np.array([index[i] for i in r if i in index]) for r in relevant_ids]
    train_clicks = _user_clicks(dataset, "train")
    excluded = [
        np.array([index[i] for i in train_clicks.get(u, [])], dtype=np.int64)
        if config.evaluation.exclude_train_clicks
        else np.array([], dtype=np.int64)
        for u in users
    ]
    items = item_embeddings(model, dataset.item_ids)
    queries = model.query_embeddings({k: tf.constant(v) for k, v in features.items()}).numpy()
    popularity = np.zeros(len(dataset.item_ids))
    for user_items in train_clicks.values():
        np.add.at(popularity, [index[i] for i in user_items], 1)
    rng = np.random.default_rng(config.training.seed)
    random_scores = rng.random((len(users), len(items)))
    scorers = {
        "two_tower": lambda rows: queries[rows] @ items.T,
        "most_popular": lambda rows: np.broadcast_to(
            popularity, (rows.stop - rows.start, len(items))
        ),
        "random": lambda rows: random_scores[rows],
    }
    methods = {}
    for name, scorer in scorers.items():
        ranked = top_k(scorer, len(users), max(ks), excluded)
        methods[name] = metrics.evaluate_rankings(ranked, relevant, ks, train_popularity=popularity)
    result = {"num_users": len(users), "num_items": len(items), "ks": ks, "methods": methods}
    if write:
        with open(os.path.join(run_dir, METRICS_FILE), "w") as f:
            json.dump(result, f, indent=2)
    return result
