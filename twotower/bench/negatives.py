"""`twotower bench negatives`: each negative source against the TFRS baseline, on the
simulator (random-exposure set) and MovieLens-100K; docs/negatives.md has the numbers."""

import os
from collections.abc import Callable
from typing import Any

from twotower.bench import runner
from twotower.bench.settings import NegativesBench
from twotower.report import save_results

KS = (10, 50, 100)
CLREC = [
    "model.similarity=cosine",
    "negatives.temperature=0.07",
    "negatives.in_batch_correction=none",
]


def variants(epochs: int, batch_size: int = 512) -> dict[str, list[str]]:
    """Name -> config overrides; every variant has the same towers and optimiser."""
    queue = f"negatives.queue_size={10 * batch_size}"
    grid = {
        "tfrs_retrieval": [
            "negatives.loss=tfrs",
            "negatives.in_batch_correction=none",
            "negatives.exposure_correction=none",
        ],
        "in_batch_logq_streaming": ["negatives.in_batch_correction=streaming"],
        "in_batch_logq_static": [],
        "mixed_streaming+corpus": [
            "negatives.in_batch_correction=streaming",
            f"negatives.corpus={batch_size}",
        ],
        "clrec_queue_embeddings": [*CLREC, queue],
        "clrec_queue_ids": [*CLREC, queue, "negatives.queue_mode=ids"],
        "multi_clrec_ids": [*CLREC, queue, "negatives.queue_mode=ids", "negatives.intentions=4"],
        "cluster_1:15": ["negatives.cluster=15", "negatives.cluster_random=1"],
        "static+cluster+uma2_ipw": [
            "negatives.cluster=15",
            "negatives.cluster_random=1",
            "negatives.space_a=1",
            "negatives.space_b=4",
            "uma2.propensity=true",
        ],
    }
    common = [
        f"training.epochs={epochs}",
        f"training.batch_size={batch_size}",
        "evaluation.ks=[10,50,100]",
    ]
    return {name: [*overrides, *common] for name, overrides in grid.items()}


def _speed(by_variant: dict[str, Any], cell: dict[str, Any]) -> dict[str, str]:
    base = by_variant["tfrs_retrieval"]["summary"]["examples_per_second"]["mean"]
    speed = cell["summary"]["examples_per_second"]["mean"]
    return {"examples/s": f"{speed:.0f}", "time/example vs tfrs": f"{base / speed:.2f}x"}


def tables(results: dict[str, Any]) -> str:
    metrics = [*(f"hit_rate@{k}" for k in KS), "aggregate_diversity@100", "popularity_index@100"]
    return runner.grid_tables(results, metrics, _speed)


def plot(results: dict[str, Any], path: str) -> None:
    figure, axes, panels = runner.panel_figure(results, height=4.5)
    for axis, (dataset, query_set) in zip(axes, panels, strict=True):
        for variant, cell in results[dataset].items():
            stats = cell["summary"][query_set]
            axis.errorbar(
                stats["aggregate_diversity@100"]["mean"],
                stats["hit_rate@50"]["mean"],
                yerr=stats["hit_rate@50"]["std"],
                fmt="o",
                capsize=3,
                label=variant,
            )
        axis.set(
            title=f"{dataset} / {query_set}", xlabel="aggregate diversity@100", ylabel="HitRate@50"
        )
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    runner.save_figure(figure, path)


def run(
    settings: NegativesBench, output_dir: str, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Runs the grid; writes negatives.json and negatives.png into `output_dir`."""
    prepared = runner.prepare_datasets(os.path.join(output_dir, "data"), settings.datasets, log)
    grid = variants(settings.epochs, settings.batch_size)
    if settings.variants:
        grid = {k: v for k, v in grid.items() if k in settings.variants or k == "tfrs_retrieval"}
    results = runner.run_grid(
        prepared, grid, settings.seeds, os.path.join(output_dir, "negatives"), log
    )
    save_results(results, output_dir, "negatives")
    plot(results, os.path.join(output_dir, "negatives.png"))
    log(tables(results))
    return results
