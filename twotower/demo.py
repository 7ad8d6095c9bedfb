"""`twotower demo`: the whole path on MovieLens-100K, end to end.

preprocess (Beam) -> train (the default recipe) -> evaluate (HitRate@K, leave-last-click-out,
training clicks excluded) -> export (query tower SavedModel + item embeddings) ->
top-10 items for three users from the exported model -> with the `text` extra (which
`make demo` installs), the movies' content clusters: k-means of the sentence embeddings
of title + genres + year that preprocessing made (what `negatives.cluster_source=content`
draws hard negatives from).
"""

import collections
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.config import Config
from pipelines.movielens import locate_movielens_100k, movie_titles
from pipelines.preprocess import DEFAULT_BEAM_ARGS, preprocess
from pipelines.text_encoder import missing_extra
from trainer.evaluate import eval_queries, evaluate_run
from trainer.export import export_run
from trainer.train import train
from twotower.report import format_table
from twotower.wiring import export_builder, scann_builder


def _demo_users(dataset_dir: str, count: int) -> list[dict[str, Any]]:
    from trainer.dataset import load_dataset  # noqa: PLC0415

    queries = eval_queries(load_dataset(dataset_dir))
    chosen = []
    for row in range(min(count, len(queries.users))):
        user = {}
        for name, values in queries.features.items():
            value = values[row]
            if isinstance(value, bytes):
                user[name] = value.decode()
            elif hasattr(value, "tolist") and isinstance(value.tolist(), list):
                user[name] = [v.decode() for v in value.tolist() if v]
        chosen.append(user)
    return chosen


TITLE = "item.title"


def _content_clusters(dataset_dir: str, seed: int, shown: int = 3) -> dict[str, list[str]]:
    """The `shown` largest of 19 content clusters (MovieLens has 19 genres), 6 items each,
    the items nearest the cluster's centre first."""
    from trainer.content import content_clusters, content_embeddings  # noqa: PLC0415
    from trainer.dataset import load_dataset  # noqa: PLC0415

    dataset = load_dataset(dataset_dir)
    labels = content_clusters(dataset, 19, seed)
    embeddings = content_embeddings(dataset)
    chosen = {}
    for label, _ in collections.Counter(labels.tolist()).most_common(shown):
        rows = np.flatnonzero(labels == label)
        centre = embeddings[rows].mean(axis=0)
        nearest = rows[np.argsort(-(embeddings[rows] @ centre), kind="stable")[:6]]
        chosen[f"cluster {label} ({len(rows)} movies)"] = [dataset.item_ids[r] for r in nearest]
    return chosen


def run_demo(
    config: Config,
    work_dir: str,
    *,
    beam_args: Sequence[str] = DEFAULT_BEAM_ARGS,
    verbose: int = 2,
    top_k: int = 10,
    log: Any = print,
) -> dict[str, Any]:
    """Runs every stage on MovieLens-100K under `work_dir` and returns the results.

    Writes `work_dir/{dataset,run}/` and `work_dir/demo_results.json`.
    """
    if config.data.source != "movielens-100k":
        raise ValueError(
            f"data.source: the demo runs on movielens-100k, got {config.data.source!r}"
        )
    text = not config.data.text_features and missing_extra() is None
    if text:  # the movies' title + genres + year, embedded in the pipeline
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, text_features=[TITLE])
        )
    elif not config.data.text_features:
        log(f"      (no content clusters: {missing_extra()})")
    stages = 6 if TITLE in config.data.text_features else 5
    dataset_dir = os.path.join(work_dir, "dataset")
    run_dir = os.path.join(work_dir, "run")
    timings = {}
    start = time.perf_counter()
    log(f"[1/{stages}] preprocess MovieLens-100K -> {dataset_dir}")
    manifest = preprocess(config, dataset_dir, beam_args=beam_args, overwrite=True)
    timings["preprocess"] = time.perf_counter() - start
    log(
        f"      train {manifest['splits']['train']['examples']} examples, "
        f"eval {manifest['splits']['eval']['examples']}"
    )
    log(f"[2/{stages}] train -> {run_dir}")
    start = time.perf_counter()
    train(config, dataset_dir, run_dir, verbose=verbose, overwrite=True)
    timings["train"] = time.perf_counter() - start
    log(f"[3/{stages}] evaluate over the whole catalog (training clicks excluded)")
    start = time.perf_counter()
    metrics = evaluate_run(run_dir, scann=scann_builder())
    timings["evaluate"] = time.perf_counter() - start
    log(f"[4/{stages}] export query tower + item embeddings")
    start = time.perf_counter()
    exported = export_run(run_dir, index=export_builder())
    timings["export"] = time.perf_counter() - start
    log(f"[5/{stages}] top-{top_k} from the exported model for three users")
    from serving.retriever import Retriever  # noqa: PLC0415

    retriever = Retriever(os.path.join(run_dir, "export"))
    top = []
    for user in _demo_users(dataset_dir, 3):
        items = retriever.retrieve(user, k=top_k, exclude=user.get("history", []))
        top.append({"user_id": user["user_id"], "items": items})
    clusters = {}
    if TITLE in config.data.text_features:
        log(f"[6/{stages}] content clusters: k-means of the title embeddings")
        clusters = _content_clusters(dataset_dir, config.training.seed)
    results = {
        "content_clusters": clusters,
        "metrics": metrics,
        "top_items": top,
        "export": exported["query_tower"],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    with open(os.path.join(work_dir, "demo_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def results_tables(results: dict[str, Any]) -> str:
    """The demo's metrics table and its top-10 lists, for the terminal."""
    ks = results["metrics"]["ks"]
    rows = [
        {"method": name, **{f"HitRate@{k}": values[f"hit_rate@{k}"] for k in ks}}
        for name, values in results["metrics"]["methods"].items()
    ]
    columns = ["method", *(f"HitRate@{k}" for k in ks)]
    parts = [
        f"MovieLens-100K, leave-last-click-out, {results['metrics']['num_users']} users, "
        f"{results['metrics']['num_items']} items",
        format_table(rows, columns),
        "",
    ]
    titles = movie_titles(locate_movielens_100k())
    for entry in results["top_items"]:
        parts.append(f"top-{len(entry['items'])} for user {entry['user_id']}:")
        parts += [f"  {score:7.3f}  {titles.get(item, item)}" for item, score in entry["items"]]
    for name, items in results.get("content_clusters", {}).items():
        parts.append(f"content {name}:")
        parts += [f"  {titles.get(item, item)}" for item in items]
    parts.append("")
    parts.append("seconds: " + ", ".join(f"{k} {v}" for k, v in results["seconds"].items()))
    return "\n".join(parts)
