"""`twotower bench debias`: which way of treating negatives finds what users like.

Every recipe (a set of config overrides, `RECIPES`) is trained on every world of the
simulator's family (`simulator.config.PRESETS`) and every seed, and judged the way
DESIGN.md says: random-exposure Recall@100 as a share of the oracle's (the true-affinity
ranking), averaged over the worlds, with the worst world beside it. Logged Recall@100,
aggregate diversity and the popularity index come along, and MovieLens-100K HR@50/100 is
the real-data column. Writes OUTPUT/debias.json and OUTPUT/debias.png.
"""

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from common.settings import to_dict
from simulator.config import PRESETS, preset
from twotower.bench import runner
from twotower.bench.recipes import RECIPES
from twotower.bench.settings import DebiasBench
from twotower.report import format_table, save_results

K = 100
# What each world reports, from the random-exposure ("re") and logged query sets.
WORLD_METRICS = {
    "share": ("random_exposure", f"oracle_share@{K}"),
    "re_recall": ("random_exposure", f"recall@{K}"),
    "logged_recall": ("logged", f"recall@{K}"),
    "diversity": ("random_exposure", f"aggregate_diversity@{K}"),
    "popularity_index": ("random_exposure", f"popularity_index@{K}"),
}
MOVIELENS_METRICS = {"hr@50": ("logged", "hit_rate@50"), "hr@100": ("logged", "hit_rate@100")}


def _scaled(name: str, scale: float) -> Any:
    """The preset's world with users and items times `scale` (its other counts kept
    within what the smaller world allows)."""
    base = preset(name)
    if scale == 1.0:
        return base
    users = max(50, round(base.num_users * scale))
    items = max(200, round(base.num_items * scale))
    return preset(
        name,
        num_users=users,
        num_items=items,
        random_exposure_users=min(base.random_exposure_users, users // 3),
        propensity_users=min(base.propensity_users, users // 4),
        true_top_k=min(base.true_top_k, items),
        recall_size=min(base.recall_size, items // 4),
    )


def _pick(
    summary: dict[str, Any], metrics: dict[str, tuple[str, str]], prefix: str = ""
) -> dict[str, Any]:
    return {name: summary[query][prefix + metric] for name, (query, metric) in metrics.items()}


def _cells(cells: dict[str, Any], metrics: dict[str, tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Recipe -> its metrics; a Multi-CLRec recipe also as "<recipe>+merge", scored on
    the round-robin merge of its main and intention lists (what the service returns)."""
    picked = {}
    for recipe, cell in cells.items():
        picked[recipe] = _pick(cell["summary"], metrics)
        query, metric = next(iter(metrics.values()))
        if runner.INTENTIONS + metric in cell["summary"][query]:
            picked[f"{recipe}+merge"] = _pick(cell["summary"], metrics, runner.INTENTIONS)
    return picked


def _overall(worlds: dict[str, Any], movielens: dict[str, Any] | None) -> dict[str, Any]:
    """Per recipe: mean share over the worlds, the worst world, MovieLens hit rates."""
    overall = {}
    for recipe in next(iter(worlds.values())):
        shares = {world: cells[recipe]["share"]["mean"] for world, cells in worlds.items()}
        worst = min(shares, key=shares.get)
        overall[recipe] = {
            "mean_share": float(np.mean(list(shares.values()))),
            "worst_share": shares[worst],
            "worst_world": worst,
            "shares": shares,
        }
        if movielens is not None:
            overall[recipe].update({m: v["mean"] for m, v in movielens[recipe].items()})
    return overall


def _propensities(trained: dict[str, Any]) -> dict[str, Any]:
    """Recipe -> world -> its UMA² heads against the simulator's true propensities."""
    heads: dict[str, Any] = {}
    for world, cells in trained.items():
        for recipe, cell in cells.items():
            if runner.PROPENSITIES in cell["summary"]:
                heads.setdefault(recipe, {})[world] = cell["summary"][runner.PROPENSITIES]
    return heads


def propensity_table(heads: dict[str, Any]) -> str:
    """Spearman and calibration (mean predicted / mean true) of p1 and p2, per recipe
    and world, mean±std over seeds."""
    rows = []
    for recipe, worlds in heads.items():
        for world, values in worlds.items():
            row = {"recipe": recipe, "world": world}
            for name in ("p1_spearman", "p2_spearman", "p1_mean_ratio", "p2_mean_ratio"):
                row[name] = f"{values[name]['mean']:.3f}±{values[name]['std']:.3f}"
            for name in ("p1_mean_abs_error", "p2_mean_abs_error"):
                row[name.replace("mean_abs_error", "mae")] = f"{values[name]['mean']:.4f}"
            rows.append(row)
    return format_table(rows, list(rows[0]))


def summary_table(overall: dict[str, Any]) -> str:
    """Recipes, best mean share first."""
    ranked = sorted(overall, key=lambda r: -overall[r]["mean_share"])
    rows = []
    for recipe in ranked:
        row = {
            "recipe": recipe,
            "mean share": f"{overall[recipe]['mean_share']:.3f}",
            "worst share": f"{overall[recipe]['worst_share']:.3f}",
            "worst world": overall[recipe]["worst_world"],
        }
        row.update({w: f"{s:.3f}" for w, s in overall[recipe]["shares"].items()})
        row.update(
            {m: f"{overall[recipe][m]:.3f}" for m in MOVIELENS_METRICS if m in overall[recipe]}
        )
        rows.append(row)
    return format_table(rows, list(rows[0]))


def plot(overall: dict[str, Any], path: str) -> None:
    """Share of the oracle per recipe: a bar per world, the mean as a black tick."""
    import matplotlib  # noqa: PLC0415  (slow import, only for plots)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    recipes = sorted(overall, key=lambda r: -overall[r]["mean_share"])
    worlds = list(overall[recipes[0]]["shares"])
    width = 0.8 / len(worlds)
    figure, axis = plt.subplots(figsize=(max(8, 0.9 * len(recipes)), 4.5))
    x = np.arange(len(recipes))
    for i, world in enumerate(worlds):
        shares = [overall[r]["shares"][world] for r in recipes]
        axis.bar(x - 0.4 + (i + 0.5) * width, shares, width, label=world)
    axis.scatter(
        x,
        [overall[r]["mean_share"] for r in recipes],
        color="k",
        marker="_",
        s=400,
        label="mean",
        zorder=3,
    )
    axis.set_xticks(x, recipes, rotation=30, ha="right")
    axis.set(
        ylabel=f"random-exposure Recall@{K} / oracle's", title="Share of the oracle, per world"
    )
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7, ncol=3)
    runner.save_figure(figure, path)


def run(
    settings: DebiasBench, output_dir: str, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Trains every recipe on every world and seed; writes debias.json and debias.png."""
    worlds = settings.worlds or list(PRESETS)
    recipes = settings.recipes or list(RECIPES)
    data_dir = os.path.join(output_dir, "debias", f"data-x{settings.world_scale:g}")
    datasets = [
        runner.prepare_world(data_dir, w, _scaled(w, settings.world_scale), log) for w in worlds
    ]
    grid = {r: [*RECIPES[r], f"training.epochs={settings.epochs}"] for r in recipes}
    runs_dir = os.path.join(output_dir, "debias", "runs")
    trained = runner.run_grid(datasets, grid, settings.seeds, runs_dir, log)
    results: dict[str, Any] = {
        "settings": to_dict(settings),
        "recipes": {r: RECIPES[r] for r in recipes},
        "worlds": {world: _cells(cells, WORLD_METRICS) for world, cells in trained.items()},
    }
    heads = _propensities(trained)
    if heads:
        results["propensities"] = heads
        results["propensity_table"] = propensity_table(heads)
    movielens = None
    if settings.movielens:
        dataset = runner.prepare_movielens(os.path.join(output_dir, "debias", "data"), log)
        cells = runner.run_grid([dataset], grid, settings.seeds, runs_dir, log)["movielens"]
        movielens = _cells(cells, MOVIELENS_METRICS)
        results["movielens"] = movielens
    results["overall"] = _overall(results["worlds"], movielens)
    results["table"] = summary_table(results["overall"])
    save_results(results, output_dir, "debias")
    plot(results["overall"], os.path.join(output_dir, "debias.png"))
    log(results["table"])
    if heads:
        log(results["propensity_table"])
    return results
