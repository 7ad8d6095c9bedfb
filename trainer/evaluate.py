"""`twotower evaluate`: exact retrieval over the whole catalog and its metrics.

Two query sets, each scored by the trained model and by two reference recommenders
(most-popular by training clicks, and random):
- "logged": every eval user is one query (features of their first eval example); the
  relevant items are their logged eval clicks.
- "random_exposure" (simulator data only): the simulator's test users, shown items
  uniformly at random; the relevant items are what they clicked there, and their true
  top-K gives `true_top_k_overlap@K`. Their query is their user features and their last
  training clicks.
Items a user clicked in the training split are never recommended unless
`evaluation.exclude_train_clicks` is off. Each query set also gets a cold-start view
(`cold_items`) when some catalog items have no training click: recall over the users'
clicks on those items alone, and the share of top-K slots they take. Definitions:
docs/metrics.md.
"""

import collections
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from common import contracts
from common.intentions import merge_rankings
from common.settings import ConfigError
from trainer import metrics
from trainer.dataset import Dataset, load_dataset, make_dataset
from trainer.ground_truth import GroundTruth, load_ground_truth
from trainer.model import TwoTowerModel
from trainer.train import load_run

_CHUNK = 256  # users scored at once: [_CHUNK, num_items] float64 in flight


@dataclasses.dataclass
class QuerySet:
    """Users to retrieve for, their query features and what counts as relevant."""

    users: list[str]
    features: dict[str, np.ndarray]
    relevant: list[set[str]]
    true_top: list[list[str]] | None = None


def item_embeddings(
    model: TwoTowerModel, item_ids: list[str], batch_size: int = 4096
) -> np.ndarray:
    """`[num_items, dim]` embeddings of `item_ids`, in their order."""
    parts = [
        model.candidate_embeddings(tf.constant(item_ids[i : i + batch_size])).numpy()
        for i in range(0, len(item_ids), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


def train_click_history(dataset: Dataset) -> dict[str, list[tuple[int, str]]]:
    """Each user's training clicks as (timestamp, item), oldest first."""
    clicks: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for batch in make_dataset(dataset, "train", 4096):
        rows = zip(
            batch["user_id"].numpy(),
            batch["timestamp"].numpy(),
            batch["item_id"].numpy(),
            strict=True,
        )
        for user, timestamp, item in rows:
            clicks[user.decode()].append((int(timestamp), item.decode()))
    return {user: sorted(history) for user, history in clicks.items()}


def _pad(rows: list[list[bytes]]) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    return np.array([list(r) + [b""] * (width - len(r)) for r in rows], dtype=object)


def eval_queries(dataset: Dataset) -> QuerySet:
    """One query per eval user: the features of their first eval example."""
    first: dict[str, tuple[int, dict[str, Any]]] = {}
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
    for name in first[users[0]][1] if users else []:
        rows = [first[u][1][name] for u in users]
        if isinstance(rows[0], np.ndarray) and rows[0].dtype.kind == "f":
            features[name] = np.stack(rows).astype(np.float32)  # numeric and vector features
        elif isinstance(rows[0], np.ndarray):  # token lists: drop padding, re-pad to the widest
            features[name] = _pad([[t for t in r if t] for r in rows])
        else:
            features[name] = np.array(rows)
    return QuerySet(users, features, [relevant[u] for u in users])


def simulated_user_features(
    users: list[str],
    truth: GroundTruth,
    history: dict[str, list[tuple[int, str]]],
    history_length: int,
) -> dict[str, np.ndarray]:
    """Query features of simulated users: their features from the user table and their
    last `history_length` training clicks."""
    features = {
        contracts.USER_ID: np.array([u.encode() for u in users], dtype=object),
        contracts.HISTORY: _pad(
            [[item.encode() for _, item in history.get(u, [])[-history_length:]] for u in users]
            if history_length
            else [[] for _ in users]
        ),
    }
    for name in truth.user_feature_names:
        features[contracts.USER_FEATURE_PREFIX + name] = _pad(
            [[t.encode() for t in truth.user_features.get(u, {}).get(name, [])] for u in users]
        )
    return features


def random_exposure_queries(
    ground_truth_dir: str, history: dict[str, list[tuple[int, str]]], history_length: int
) -> QuerySet:
    """Queries of the simulator's random-exposure users (see module docstring)."""
    truth = load_ground_truth(ground_truth_dir)
    users = [row["user_id"] for row in truth.random_exposure]
    features = simulated_user_features(users, truth, history, history_length)
    return QuerySet(
        users,
        features,
        [set(row["clicked"]) for row in truth.random_exposure],
        [truth.true_top_k.get(u, []) for u in users],
    )


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


def ranked_by_order(order: np.ndarray, k: int, excluded: list[np.ndarray]) -> np.ndarray:
    """`[users, k]`: each user's first `k` items of one global `order` (best first) that
    are not excluded: the most-popular list, without scoring the catalog per user."""
    longest = max((len(skip) for skip in excluded), default=0)
    head = order[: k + longest]
    ranked = np.empty((len(excluded), k), dtype=np.int64)
    for row, skip in enumerate(excluded):
        ranked[row] = (head[~np.isin(head, skip)] if len(skip) else head)[:k]
    return ranked


def random_ranking(num_items: int, k: int, excluded: list[np.ndarray], seed: int) -> np.ndarray:
    """`[users, k]`: a uniformly random ordered `k`-sample of the items per user, none
    excluded; drawn per chunk of users (seeded by its first row), `k` + the user's
    exclusions at a time, never a users × items matrix."""
    ranked = np.empty((len(excluded), k), dtype=np.int64)
    for start in range(0, len(excluded), _CHUNK):
        rng = np.random.default_rng([seed, start])
        for row in range(start, min(start + _CHUNK, len(excluded))):
            skip = excluded[row]
            draw = rng.choice(num_items, size=min(num_items, k + len(skip)), replace=False)
            ranked[row] = (draw[~np.isin(draw, skip)] if len(skip) else draw)[:k]
    return ranked


def _score_query_set(
    model: TwoTowerModel,
    items: np.ndarray,
    queries: QuerySet,
    index: dict[str, int],
    history: dict[str, list[tuple[int, str]]],
    popularity: np.ndarray,
    ks: list[int],
    exclude: bool,
    seed: int,
    ann_index: Any = None,
) -> dict[str, Any]:
    inputs = model.query_tower.inputs_from(queries.features, len(queries.users))
    embedded = model.query_embeddings(inputs).numpy()
    excluded = [
        np.array(
            [index[i] for _, i in history.get(u, []) if i in index] if exclude else [],
            dtype=np.int64,
        )
        for u in queries.users
    ]
    # An excluded item can never be retrieved, so it cannot count as relevant either.
    relevant = [
        np.setdiff1d(np.array([index[i] for i in r if i in index], dtype=np.int64), skip)
        for r, skip in zip(queries.relevant, excluded, strict=True)
    ]
    true_top = None
    if queries.true_top is not None:
        true_top = np.array([[index[i] for i in row[: max(ks)]] for row in queries.true_top])
    k = max(ks)
    rankings = {
        "two_tower": top_k(lambda rows: embedded[rows] @ items.T, len(queries.users), k, excluded),
        # The baselines without a users × items score matrix (at 100k items and 100k eval
        # users, ranking them that way took two thirds of evaluate's time and memory).
        "most_popular": ranked_by_order(np.argsort(-popularity, kind="stable"), k, excluded),
        "random": random_ranking(len(items), k, excluded, seed),
    }
    if model.intentions:  # Multi-CLRec: the main list merged with each intention's
        vectors = model.intention_vectors(tf.constant(embedded)).numpy()
        lists = [rankings["two_tower"]] + [
            top_k(
                lambda rows, h=h: vectors[rows, h] @ items.T, len(queries.users), max(ks), excluded
            )
            for h in range(model.intentions)
        ]
        rankings["two_tower_intentions"] = merge_rankings(lists, max(ks))[0]
    if ann_index is not None:  # the approximate index the export serves, same exclusions
        rankings["two_tower_scann"] = ann_index.search(embedded, max(ks), excluded)[0]
    if queries.true_top is not None:
        rankings["oracle"] = _oracle_ranking(queries, index, excluded, max(ks))
    methods = {
        name: metrics.evaluate_rankings(
            ranked, relevant, ks, true_top=true_top, train_popularity=popularity
        )
        for name, ranked in rankings.items()
    }
    cold = popularity == 0  # no training click: the cold-start view (docs/metrics.md)
    cold_view = None
    if cold.any():
        cold_view = {
            "num_items": int(cold.sum()),
            "methods": {
                name: metrics.cold_item_metrics(ranked, relevant, cold, ks)
                for name, ranked in rankings.items()
            },
        }
    if "oracle" in methods:  # the share of what ranking by the true affinity reaches
        for values in methods.values():
            for k in ks:
                best = methods["oracle"][f"recall@{k}"]
                values[f"oracle_share@{k}"] = values[f"recall@{k}"] / best if best else 0.0
    scored = {"num_users": len(queries.users), "methods": methods, "rankings": rankings}
    if cold_view is not None:
        scored["cold_items"] = cold_view
    return scored


def _oracle_ranking(
    queries: QuerySet, index: dict[str, int], excluded: list[np.ndarray], k: int
) -> np.ndarray:
    """`[num_users, k]` each user's items by true affinity, without the excluded ones
    (-1 pads where the true list runs out)."""
    ranked = np.full((len(queries.users), k), -1, dtype=np.int64)
    for row, (items, skip) in enumerate(zip(queries.true_top, excluded, strict=True)):
        skipped = set(skip.tolist())
        kept = [index[i] for i in items if i in index and index[i] not in skipped][:k]
        ranked[row, : len(kept)] = kept
    return ranked


def evaluate_run(
    run_dir: str,
    *,
    on: str | None = None,
    ground_truth: str | None = None,
    write: bool = True,
    plots: bool = True,
    scann: Any = None,
) -> dict[str, Any]:
    """Evaluates a trained run.

    Args:
      run_dir: a finished training run.
      on: a dataset directory to evaluate on instead of the run's own (same catalog).
      ground_truth: a simulator folder with random_exposure.jsonl and true_top_k.jsonl;
        by default the dataset's own simulator input, if it came from one.
      write: write `metrics.json` (and plots) into `run_dir`.
      plots: draw the PNGs (see trainer/plots.py).
      scann: a ScaNN index builder (`serving.index_io.IndexBuilder`), needed when the run's
        `evaluation.scann` is on: the same embeddings are then also retrieved through the
        index the export serves ("two_tower_scann").

    Raises:
      ConfigError: `evaluation.scann` is on and no `scann` builder was given.

    Returns:
      {"num_items", "ks", "num_users", "methods": {method: {metric@K: value}}} for the
      logged eval clicks, plus "random_exposure": {"num_users", "methods"} on simulator data.
    """
    config, dataset, model = load_run(run_dir)
    evaluated = load_dataset(on) if on else dataset
    ks = sorted(config.evaluation.ks)
    index = {item: i for i, item in enumerate(dataset.item_ids)}
    history = train_click_history(evaluated)
    popularity = np.zeros(len(dataset.item_ids))
    for clicks in history.values():
        np.add.at(popularity, [index[i] for _, i in clicks if i in index], 1)
    items = item_embeddings(model, dataset.item_ids)
    ann_index = None
    if config.evaluation.scann:
        if scann is None:
            raise ConfigError(
                "needs a ScaNN index builder: evaluate_run(scann=...)", "evaluation.scann"
            )
        ann_index = scann.build(items, spherical=config.model.similarity == "cosine")
    score = lambda queries: _score_query_set(  # noqa: E731
        model,
        items,
        queries,
        index,
        history,
        popularity,
        ks,
        config.evaluation.exclude_train_clicks,
        config.training.seed,
        ann_index,
    )
    logged = score(eval_queries(evaluated))
    result: dict[str, Any] = {
        "num_items": len(items),
        "ks": ks,
        "num_users": logged["num_users"],
        "methods": logged["methods"],
    }
    if "cold_items" in logged:
        result["cold_items"] = logged["cold_items"]
    rankings = {"logged": logged.pop("rankings")}
    truth_dir = ground_truth or (
        evaluated.manifest["options"]["input"]
        if evaluated.manifest["source"] == "simulator"
        else None
    )
    if truth_dir:
        queries = random_exposure_queries(truth_dir, history, config.data.history_length)
        exposure = score(queries)
        rankings["random_exposure"] = exposure.pop("rankings")
        result["random_exposure"] = exposure
    if write:
        if plots:
            from trainer.plots import plot_evaluation  # noqa: PLC0415  (matplotlib is slow)

            result["plots"] = plot_evaluation(result, rankings, popularity, run_dir)
        with open(os.path.join(run_dir, contracts.METRICS_FILE), "w") as f:
            json.dump(result, f, indent=2)
    return result
