"""`twotower bench uma2`: UMA²'s Table 1 rows × towers × seeds, on the simulator and
MovieLens-100K (docs/uma2.md has the measured numbers)."""

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twotower.bench import runner
from twotower.bench.settings import Uma2Bench
from twotower.report import save_results

METRICS = ("hit_rate", "recall", "precision")
KS = (100, 200)


def variants(epochs: int, strategies: Sequence[str], towers: Sequence[str]) -> dict[str, list[str]]:
    return {
        f"{strategy}/{tower}": [
            f"uma2.strategy={strategy}",
            f"model.tower={tower}",
            f"training.epochs={epochs}",
            "evaluation.ks=[100,200]",
        ]
        for tower in towers
        for strategy in strategies
    }


def tables(results: dict[str, Any]) -> str:
    return runner.grid_tables(results, [f"{m}@{k}" for k in KS for m in METRICS])


def plot(results: dict[str, Any], path: str) -> None:
    figure, axes, panels = runner.panel_figure(results, height=4.0)
    for axis, (dataset, query_set) in zip(axes, panels, strict=True):
        by_variant = results[dataset]
        towers = sorted({v.split("/")[1] for v in by_variant})
        strategies = [v.split("/")[0] for v in by_variant if v.endswith(towers[0])]
        x = np.arange(len(strategies))
        for i, tower in enumerate(towers):
            stats = [
                by_variant[f"{s}/{tower}"]["summary"][query_set]["recall@100"] for s in strategies
            ]
            axis.bar(
                x + (i - 0.5 * (len(towers) - 1)) * 0.38,
                [s["mean"] for s in stats],
                0.38,
                yerr=[s["std"] for s in stats],
                capsize=3,
                label=tower,
            )
        axis.set_xticks(x, strategies, rotation=20)
        axis.set(title=f"Recall@100, {dataset} / {query_set}", ylabel="Recall@100")
        axis.legend()
        axis.grid(axis="y", alpha=0.3)
    runner.save_figure(figure, path)


def run(settings: Uma2Bench, output_dir: str, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Runs the grid; writes uma2.json and uma2.png into `output_dir`; returns the results."""
    prepared = runner.prepare_datasets(os.path.join(output_dir, "data"), settings.datasets, log)
    grid = variants(settings.epochs, settings.strategies, settings.towers)
    results = runner.run_grid(prepared, grid, settings.seeds, os.path.join(output_dir, "uma2"), log)
    save_results(results, output_dir, "uma2")
    plot(results, os.path.join(output_dir, "uma2.png"))
    log(tables(results))
    return results
