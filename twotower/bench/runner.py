"""Shared harness of the training benchmarks: configs × seeds on prepared datasets.

Each cell trains a run, evaluates it over the whole catalog, and keeps the metrics; the
summary is the mean and standard deviation over seeds. Results are printed as a table,
saved as JSON and drawn as a PNG by the caller.
"""

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common import contracts
from common.config import load_config
from pipelines.preprocess import preprocess
from simulator.config import SimulatorConfig
from simulator.simulate import simulate
from trainer.build import resolve_negatives
from trainer.evaluate import evaluate_run
from trainer.propensity_check import check_propensities
from trainer.train import train
from twotower.report import format_table

IN_MEMORY_BEAM = ("--runner=DirectRunner", "--direct_running_mode=in_memory")


@dataclasses.dataclass(frozen=True)
class BenchDataset:
    """A prepared dataset and which of its query sets to report."""

    name: str
    directory: str
    query_sets: tuple[str, ...]  # "logged" and/or "random_exposure"
    overrides: tuple[str, ...] = ()
    simulator_dir: str = ""  # a simulated world's folder: its true propensities


# "tiny": a world small enough for `--quick` runs (a few seconds to build and train on).
TINY_WORLD = SimulatorConfig(
    num_users=200,
    num_items=300,
    num_clusters=6,
    days=4,
    eval_days=1,
    recall_size=40,
    random_exposure_users=100,
    random_exposure_size=30,
    true_top_k=200,
)


def prepare_world(
    work_dir: str, name: str, world: SimulatorConfig, log: Callable[[str], Any] = print
) -> BenchDataset:
    """Simulates `world` and preprocesses it (once; reused when present) under
    `work_dir/name`: time split, logged and random-exposure query sets."""
    folder = os.path.join(work_dir, name, "world")
    directory = os.path.join(work_dir, name, "dataset")
    overrides = ["data.source=simulator", f"data.input={folder}", "data.split=time"]
    if not os.path.exists(os.path.join(directory, contracts.MANIFEST_FILE)):
        log(f"simulating the {name} world -> {folder}")
        simulate(world, folder)
        _preprocess(name, directory, overrides, log)
    return BenchDataset(name, directory, ("random_exposure", "logged"), simulator_dir=folder)


def prepare_movielens(
    work_dir: str,
    log: Callable[[str], Any] = print,
    name: str = "movielens",
    overrides: Sequence[str] = (),
) -> BenchDataset:
    """MovieLens-100K, leave-last-click-out (logged clicks only), under `work_dir/name`,
    preprocessed with `overrides` (e.g. text features)."""
    directory = os.path.join(work_dir, name, "dataset")
    if not os.path.exists(os.path.join(directory, contracts.MANIFEST_FILE)):
        _preprocess(name, directory, ["data.source=movielens-100k", *overrides], log)
    return BenchDataset(name, directory, ("logged",))


def _preprocess(name: str, directory: str, overrides: list[str], log: Callable) -> None:
    log(f"preprocessing {name} -> {directory}")
    config = load_config(overrides=overrides)
    preprocess(config, directory, beam_args=IN_MEMORY_BEAM, overwrite=True)


def prepare_datasets(
    work_dir: str, names: Sequence[str], log: Callable[[str], Any] = print
) -> list[BenchDataset]:
    """The named benchmark datasets under `work_dir`, built once and then reused.

    "simulator": the default simulated world (`prepare_world`); "tiny": `TINY_WORLD`;
    "movielens": MovieLens-100K (`prepare_movielens`).
    """
    worlds = {"simulator": SimulatorConfig(), "tiny": TINY_WORLD}
    prepared = []
    for name in names:
        if name in worlds:
            prepared.append(prepare_world(work_dir, name, worlds[name], log))
        elif name == "movielens":
            prepared.append(prepare_movielens(work_dir, log))
        else:
            raise ValueError(f"unknown benchmark dataset {name!r}: simulator, tiny or movielens")
    return prepared


INTENTIONS = "intentions/"  # metric prefix of the merged intention lists
PROPENSITIES = "propensities"  # a cell's "query set" of UMA² head checks (p1_spearman...)
COLD = "cold/"  # a cell's cold-start query sets: "cold/logged", "cold/random_exposure"


def run_cell(
    dataset: BenchDataset, overrides: Sequence[str], seed: int, run_dir: str
) -> dict[str, Any]:
    """Trains and evaluates one (config, seed); returns metrics per query set + speed."""
    config = load_config(overrides=[*dataset.overrides, *overrides, f"training.seed={seed}"])
    start = time.perf_counter()
    run = train(config, dataset.directory, run_dir, verbose=0, overwrite=True)
    seconds = time.perf_counter() - start
    result = evaluate_run(run_dir, write=False, plots=False)
    sets = {"logged": _two_tower(result["methods"])}
    if "random_exposure" in result:
        sets["random_exposure"] = _two_tower(result["random_exposure"]["methods"])
    # The cold-start view (items without a training click), when the dataset has any.
    for name, scored in (("logged", result), ("random_exposure", result.get("random_exposure"))):
        if scored and "cold_items" in scored:
            sets[f"{COLD}{name}"] = dict(scored["cold_items"]["methods"]["two_tower"])
    metrics = {name: sets[name] for name in dataset.query_sets if name in sets}
    if dataset.simulator_dir and resolve_negatives(config)[1]:  # UMA²'s heads vs the truth
        checked = check_propensities(run_dir, dataset.simulator_dir)
        metrics[PROPENSITIES] = {
            f"{head}_{name}": value
            for head, values in checked.items()
            for name, value in values.items()
            if name != "pairs"
        }
    return {
        "metrics": metrics,
        "examples_per_second": float(np.mean(run["history"]["examples_per_second"])),
        "train_seconds": seconds,
    }


def _two_tower(methods: dict[str, Any]) -> dict[str, float]:
    """The model's metrics; a Multi-CLRec model's merged lists' too, as "intentions/..."."""
    metrics = dict(methods["two_tower"])
    for name, value in methods.get("two_tower_intentions", {}).items():
        metrics[f"{INTENTIONS}{name}"] = value
    return metrics


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every metric and of the speed."""
    summary: dict[str, Any] = {}
    for query_set in cells[0]["metrics"]:
        summary[query_set] = {}
        for metric in cells[0]["metrics"][query_set]:
            values = [c["metrics"][query_set][metric] for c in cells]
            summary[query_set][metric] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
            }
    speed = [c["examples_per_second"] for c in cells]
    summary["examples_per_second"] = {"mean": float(np.mean(speed)), "std": float(np.std(speed))}
    return summary


def run_grid(
    datasets: Sequence[BenchDataset],
    variants: dict[str, Sequence[str]],
    seeds: Sequence[int],
    work_dir: str,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Every variant × dataset × seed; returns {dataset: {variant: {"seeds", "summary"}}}."""
    results: dict[str, Any] = {}
    for dataset in datasets:
        results[dataset.name] = {}
        for variant, overrides in variants.items():
            cells = []
            for seed in seeds:
                run_dir = os.path.join(work_dir, "runs", dataset.name, variant, str(seed))
                cells.append(run_cell(dataset, overrides, seed, run_dir))
                log(
                    f"{dataset.name:10s} {variant:28s} seed {seed}: "
                    f"{cells[-1]['train_seconds']:.0f} s"
                )
            results[dataset.name][variant] = {
                "overrides": list(overrides),
                "seeds": cells,
                "summary": summarize(cells),
            }
    return results


def cell_text(summary: dict[str, Any], query_set: str, metric: str) -> str:
    value = summary[query_set][metric]
    return f"{value['mean']:.4f}±{value['std']:.4f}"


def grid_tables(
    results: dict[str, Any],
    metrics: Sequence[str],
    extra: Callable[[dict[str, Any], dict[str, Any]], dict[str, str]] | None = None,
) -> str:
    """One table per (dataset, query set) of a grid: each metric's mean±std over seeds,
    a row per variant; `extra(by_variant, cell)` adds columns of its own."""
    parts = []
    for dataset, query_set in query_panels(results):
        by_variant = results[dataset]
        rows = []
        for variant, cell in by_variant.items():
            row = {"variant": variant}
            row.update({m: cell_text(cell["summary"], query_set, m) for m in metrics})
            row.update(extra(by_variant, cell) if extra else {})
            rows.append(row)
        title = f"{dataset} / {query_set} (mean±std over seeds)"
        parts += [title, format_table(rows, list(rows[0])), ""]
    return "\n".join(parts)


def query_panels(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(dataset, query set) pairs of a grid's results, in order."""
    return [
        (dataset, query_set)
        for dataset, by_variant in results.items()
        for query_set in next(iter(by_variant.values()))["summary"]
        if query_set not in ("examples_per_second", PROPENSITIES)
    ]


def panel_figure(results: dict[str, Any], height: float = 4.0) -> tuple[Any, list, list]:
    """A matplotlib figure with one axis per (dataset, query set) panel."""
    import matplotlib  # noqa: PLC0415  (slow import, only for plots)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = query_panels(results)
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), height), squeeze=False)
    return figure, list(axes[0]), panels


def save_figure(figure: Any, path: str) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
