"""`twotower bench content`: content features for cold items, content clusters for hard
negatives (issue 13; docs/features.md has the numbers).

Variants (`CONTENT_VARIANTS`): the id + categorical model; the same towers reading the
content features too (each also with half the item ids hidden in training,
`model.item_id_dropout=0.5`) (MovieLens-100K: title + genres + year embedded by the sentence
encoder; the simulator: each item's content vector, its true factors seen through noise);
and that model with same-cluster hard negatives (15 same-cluster : 1 random per positive,
the paper's 1:15) from the catalog's clusters, from k-means of the learned item
embeddings, or from k-means of the content embeddings.

Judged on the simulator's world family (random-exposure Recall@100 as a share of the
oracle's, mean and worst world; late items make the cold view), on MovieLens-100K
leave-last-click-out (HR@50/100, the paper's numbers), and on MovieLens-100K with 10% of
the items' clicks held out of training (cold Recall@100, overall Recall@100). Writes
OUTPUT/content.json and OUTPUT/content.png.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from common.settings import to_dict
from twotower.bench import runner
from twotower.bench.debias import _scaled
from twotower.bench.settings import ContentBench
from twotower.report import format_table, save_results

K = 100
_ID_DROPOUT = "model.item_id_dropout=0.5"  # DropoutNet: items placed by content alone
_HARD = ["negatives.cluster=15", "negatives.cluster_random=1"]
VARIANTS: dict[str, list[str]] = {
    "ids+categorical": ["model.content_features=false"],
    "ids+categorical+id_dropout": ["model.content_features=false", _ID_DROPOUT],
    "content": [],
    "content+id_dropout": [_ID_DROPOUT],
    "content+cluster_catalog": [*_HARD, "negatives.cluster_source=catalog"],
    "content+cluster_kmeans": [*_HARD, "negatives.cluster_source=kmeans"],
    "content+cluster_content": [*_HARD, "negatives.cluster_source=content"],
}
_COLD_LOGGED = runner.COLD + "logged"
_COLD_RE = runner.COLD + "random_exposure"


def _mean(summary: dict[str, Any], query_set: str, metric: str) -> float | None:
    values = summary.get(query_set, {}).get(metric)
    return None if values is None else values["mean"]


def _overall(results: dict[str, Any], variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per variant: the worlds' mean and worst share and cold recall, MovieLens's."""
    overall: dict[str, dict[str, Any]] = {}
    worlds = {n: cells for n, cells in results.items() if not n.startswith("movielens")}
    for variant in variants:
        row: dict[str, Any] = {}
        if worlds:
            shares = {
                w: _mean(c[variant]["summary"], "random_exposure", f"oracle_share@{K}")
                for w, c in worlds.items()
            }
            worst = min(shares, key=shares.get)
            colds = [_mean(c[variant]["summary"], _COLD_RE, f"recall@{K}") for c in worlds.values()]
            row.update(
                mean_share=float(np.mean(list(shares.values()))),
                worst_share=shares[worst],
                worst_world=worst,
                shares=shares,
                world_cold_recall=float(np.mean([c for c in colds if c is not None] or [0.0])),
            )
        if "movielens" in results:
            summary = results["movielens"][variant]["summary"]
            row.update(
                ml_hr50=_mean(summary, "logged", "hit_rate@50"),
                ml_hr100=_mean(summary, "logged", "hit_rate@100"),
            )
        if "movielens_cold" in results:
            summary = results["movielens_cold"][variant]["summary"]
            row.update(
                ml_cold_recall=_mean(summary, _COLD_LOGGED, f"recall@{K}"),
                ml_cold_slots=_mean(summary, _COLD_LOGGED, f"slot_share@{K}"),
                ml_recall=_mean(summary, "logged", f"recall@{K}"),
            )
        overall[variant] = row
    return overall


_COLUMNS = {
    "mean_share": "worlds: mean share",
    "worst_share": "worst share",
    "world_cold_recall": f"worlds: cold R@{K}",
    "ml_hr50": "ML HR@50",
    "ml_hr100": "ML HR@100",
    "ml_recall": f"ML(cold split) R@{K}",
    "ml_cold_recall": f"ML cold R@{K}",
    "ml_cold_slots": f"ML cold slots@{K}",
}


def summary_table(overall: dict[str, Any]) -> str:
    """One row per variant; cold recall also as a multiple of the id+categorical model's."""
    base = overall.get("ids+categorical", {})
    rows = []
    for variant, values in overall.items():
        row = {"variant": variant}
        for key, title in _COLUMNS.items():
            if values.get(key) is not None:
                row[title] = f"{values[key]:.4f}"
        for key in ("world_cold_recall", "ml_cold_recall"):
            if values.get(key) is not None and base.get(key):
                row[f"{_COLUMNS[key]} ×base"] = f"{values[key] / base[key]:.2f}"
        rows.append(row)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    return format_table(rows, columns)


def plot(overall: dict[str, Any], path: str) -> None:
    """Bars per variant: the worlds' mean share and cold recall, MovieLens's numbers."""
    import matplotlib  # noqa: PLC0415  (slow import, only for plots)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    variants = list(overall)
    keys = [k for k in _COLUMNS if any(overall[v].get(k) is not None for v in variants)]
    figure, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 4), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        values = [overall[v].get(key) or 0.0 for v in variants]
        axis.bar(range(len(variants)), values, color=[f"C{i}" for i in range(len(variants))])
        axis.set_xticks(range(len(variants)), variants, rotation=40, ha="right", fontsize=7)
        axis.set_title(_COLUMNS[key], fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    runner.save_figure(figure, path)


def run(
    settings: ContentBench, output_dir: str, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Trains every variant on every dataset and seed; writes content.json and .png."""
    data_dir = os.path.join(output_dir, "content", "data")
    cold_sets = ("random_exposure", "logged", _COLD_RE, _COLD_LOGGED)
    datasets = []
    for name in settings.worlds:
        world = dataclasses.replace(
            _scaled(name, settings.world_scale),
            content_dim=settings.content_dim,
            content_noise=settings.content_noise,
            cold_item_fraction=settings.cold_item_fraction,
        )
        tag = f"{name}-x{settings.world_scale:g}"
        prepared = runner.prepare_world(data_dir, tag, world, log)
        datasets.append(dataclasses.replace(prepared, name=name, query_sets=cold_sets))
    if settings.movielens:
        text = ["data.text_features=[item.title]"]
        datasets.append(runner.prepare_movielens(data_dir, log, "movielens", text))
        cold = [*text, f"data.cold_item_fraction={settings.cold_item_fraction}"]
        prepared = runner.prepare_movielens(data_dir, log, "movielens_cold", cold)
        datasets.append(dataclasses.replace(prepared, query_sets=("logged", _COLD_LOGGED)))
    grid = {v: [*VARIANTS[v], f"training.epochs={settings.epochs}"] for v in settings.variants}
    trained = runner.run_grid(
        datasets, grid, settings.seeds, os.path.join(output_dir, "content", "runs"), log
    )
    overall = _overall(trained, list(settings.variants))
    results = {
        "settings": to_dict(settings),
        "variants": {v: VARIANTS[v] for v in settings.variants},
        "datasets": trained,
        "overall": overall,
        "table": summary_table(overall),
    }
    save_results(results, output_dir, "content")
    plot(overall, os.path.join(output_dir, "content.png"))
    log(results["table"])
    return results
