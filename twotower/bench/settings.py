"""The settings of every benchmark (`twotower bench NAME` flags), and their quick sizes.

Kept apart from the benchmark code so that building the command line imports no
TensorFlow. Each class's `QUICK` holds the overrides of `--quick`: tiny sizes that run in
about a minute on 2 cores (the tests run every benchmark that way).
"""

import dataclasses
from typing import Any, ClassVar

from common.settings import ConfigError, Settings, setting
from serving.index_config import IndexConfig
from simulator.config import PRESETS
from twotower.bench.recipes import RECIPES

TRAINING_DATASETS = ("simulator", "movielens", "tiny")
TRAIN_PARTS = (
    "catalog",
    "cluster",
    "queue",
    "history",
    "vocabulary",
    "relative",
    "tfrs",
    "input",
    "loss",
    "optimizer",
)
UMA2_STRATEGIES = ("SS-A", "SS-AB", "SS-ABC-random", "SS-ABC-fixed", "UMA2")
_DATASETS_HELP = (
    "datasets: simulator (the default world), movielens (MovieLens-100K), tiny (a small "
    "simulated world, for --quick)"
)


def _check_names(values: list[str], allowed: tuple[str, ...], key: str) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ConfigError(f"{unknown or values} not among {', '.join(allowed)}", key)


@dataclasses.dataclass(frozen=True)
class PipelineBench(Settings):
    """`twotower bench pipeline`: Beam against the pure-Python reference."""

    QUICK: ClassVar[dict[str, Any]] = {"sizes": [2_000]}

    sizes: list[int] = setting([100_000, 1_000_000], "synthetic request counts")
    workers: int = setting(2, "DirectRunner worker processes", min=1)
    running_mode: str = setting(
        "multi_processing",
        "DirectRunner mode",
        choices=("in_memory", "multi_threading", "multi_processing"),
    )
    num_shards: int = setting(
        4, "data.num_shards of the Beam run (0: the runner decides, saving a shuffle)", min=0
    )


@dataclasses.dataclass(frozen=True)
class Uma2Bench(Settings):
    """`twotower bench uma2`: UMA²'s sampling strategies × towers × seeds."""

    QUICK: ClassVar[dict[str, Any]] = {"datasets": ["tiny"], "seeds": [1], "epochs": 1}

    datasets: list[str] = setting(["simulator", "movielens"], _DATASETS_HELP)
    seeds: list[int] = setting([1, 2, 3], "training seeds; results are mean ± std over them")
    epochs: int = setting(5, "epochs per run", min=1)
    strategies: list[str] = setting(list(UMA2_STRATEGIES), "uma2.strategy values")
    towers: list[str] = setting(["youtube_dnn", "dat"], "model.tower values")

    def check(self) -> None:
        _check_names(self.datasets, TRAINING_DATASETS, "datasets")
        _check_names(self.strategies, UMA2_STRATEGIES, "strategies")
        _check_names(self.towers, ("youtube_dnn", "dat"), "towers")


@dataclasses.dataclass(frozen=True)
class NegativesBench(Settings):
    """`twotower bench negatives`: every negative source against the TFRS baseline."""

    QUICK: ClassVar[dict[str, Any]] = {
        "datasets": ["tiny"],
        "seeds": [1],
        "epochs": 1,
        "batch_size": 64,
    }

    datasets: list[str] = setting(["simulator", "movielens"], _DATASETS_HELP)
    seeds: list[int] = setting([1, 2, 3], "training seeds; results are mean ± std over them")
    epochs: int = setting(5, "epochs per run", min=1)
    batch_size: int = setting(512, "batch size of every variant (the queue is 10x)", min=1)
    variants: list[str] = setting([], "only these variants (and the TFRS baseline); [] = all")

    def check(self) -> None:
        _check_names(self.datasets, TRAINING_DATASETS, "datasets")


@dataclasses.dataclass(frozen=True)
class DistributedBench(Settings):
    """`twotower bench distributed`: one local worker against two, and the queue all-gather."""

    QUICK: ClassVar[dict[str, Any]] = {
        "dataset": "tiny",
        "epochs": 1,
        "batch_size": 64,
        "queue_size": 640,
        "gather_steps": 20,
    }

    dataset: str = setting("movielens", "training data", choices=TRAINING_DATASETS)
    epochs: int = setting(2, "epochs per run; the last one is timed", min=1)
    batch_size: int = setting(512, "global batch size of both runs", min=2)
    queue_size: int = setting(5120, "CLRec queue length (the all-gathered state)", min=1)
    gather_steps: int = setting(200, "steps of the all-gather timing", min=1)


@dataclasses.dataclass(frozen=True)
class ServingBench(Settings):
    """`twotower bench serving`: ScaNN against brute force, the query tower, the service."""

    QUICK: ClassVar[dict[str, Any]] = {
        "num_items": 5_000,
        "num_clusters": 50,
        "num_queries": 100,
        "single_queries": 50,
        "batch_size": 50,
        "vocabulary": 1_000,
        "tower_calls": 50,
        "e2e_requests": 200,
        "e2e_clients": 4,
    }

    num_items: int = setting(1_000_000, "synthetic corpus size", min=1)
    dim: int = setting(32, "embedding dimension", min=1)
    num_clusters: int = setting(
        1_000, "Gaussian clusters of the corpus (0: structureless N(0, I) noise)", min=0
    )
    spread: float = setting(1.0, "noise around a cluster centre, relative to the centres", min=0)
    k: int = setting(100, "K of every search", min=1)
    num_queries: int = setting(1_000, "queries for recall and batched latency", min=1)
    single_queries: int = setting(200, "queries timed one at a time", min=1)
    batch_size: int = setting(100, "queries per batched search", min=1)
    vocabulary: int = setting(100_000, "user and item id vocabulary of the query tower", min=1)
    tower_calls: int = setting(500, "query tower calls timed in process", min=1)
    e2e_requests: int = setting(2_000, "POST /v1/retrieve requests end to end", min=1)
    e2e_clients: int = setting(8, "concurrent keep-alive clients", min=1)
    e2e_k: int = setting(100, "k of the end-to-end requests", min=1)
    seed: int = setting(0, "random seed", min=0)
    index: IndexConfig = dataclasses.field(default_factory=lambda: IndexConfig(kind="scann"))


@dataclasses.dataclass(frozen=True)
class DebiasBench(Settings):
    """`twotower bench debias`: every recipe on every simulated world, judged by its
    random-exposure Recall@100 as a share of the oracle's (docs/negatives.md)."""

    QUICK: ClassVar[dict[str, Any]] = {
        "worlds": ["default", "popularity-trap"],
        "recipes": ["default", "uma2", "multi_clrec"],
        "seeds": [1],
        "epochs": 1,
        "world_scale": 0.2,
        "movielens": False,
    }

    worlds: list[str] = setting(
        [], f"simulator presets to train on, of {', '.join(PRESETS)}; [] = all (docs/simulator.md)"
    )
    recipes: list[str] = setting(
        [], f"recipes to train, of {', '.join(RECIPES)}; [] = all (docs/negatives.md)"
    )
    seeds: list[int] = setting([1, 2, 3], "training seeds; results are mean ± std over them")
    epochs: int = setting(8, "epochs per run", min=1)
    world_scale: float = setting(
        1.0, "users and items of every world, times the preset's (0.2 for a quick look)", min=0.05
    )
    movielens: bool = setting(True, "also train every recipe on MovieLens-100K (HR@50, HR@100)")

    def check(self) -> None:
        if self.worlds:
            _check_names(self.worlds, tuple(PRESETS), "worlds")
        if self.recipes:
            _check_names(self.recipes, tuple(RECIPES), "recipes")


@dataclasses.dataclass(frozen=True)
class TrainBench(Settings):
    """`twotower bench train`: time per training step against catalog size, queue size,
    history length, an item feature's vocabulary and recipe; plain TFRS against
    `twotower train`; the input pipeline (docs/performance.md)."""

    QUICK: ClassVar[dict[str, Any]] = {
        "catalogs": [300, 3_000],
        "clicked_items": 300,
        "requests": 3_000,
        "batch_size": 64,
        "warmup": 3,
        "steps": 5,
        "rounds": 1,
        "queue_sizes": [0, 128],
        "history_lengths": [20],
        "brands": [10, 300],
        "kmeans_every_steps": 3,
        "gpu_batches": [64],
        "gpu_catalog": 300,
    }

    device: str = setting(
        "cpu", "cpu: the full CPU bench; gpu: the accelerator check", choices=("cpu", "gpu")
    )
    catalogs: list[int] = setting([10_000, 100_000, 1_000_000], "catalog sizes (same clicks)")
    clicked_items: int = setting(10_000, "items the synthetic requests use", min=1)
    requests: int = setting(100_000, "synthetic requests (about one click each)", min=1)
    batch_size: int = setting(512, "batch size of every CPU measurement", min=1)
    warmup: int = setting(15, "steps before timing (tracing, first batches)", min=1)
    steps: int = setting(100, "timed steps per measurement", min=2)
    rounds: int = setting(3, "measurements per configuration, interleaved; the fastest kept", min=1)
    queue_sizes: list[int] = setting(
        [0, 1_024, 5_120, 10_240, 20_480], "negatives.queue_size values (cached CLRec queue)"
    )
    history_lengths: list[int] = setting([5, 20, 50, 100], "data.history_length values")
    brands: list[int] = setting(
        [10_000, 100_000],
        "values of an extra item feature (part vocabulary), on a catalog of the smallest "
        "size or the most values, whichever is larger; from about 10x the batch up a batch "
        "reads about as many of its rows at every size, so only the table's size differs",
    )
    kmeans_every_steps: int = setting(50, "k-means refresh interval of the cluster curve", min=1)
    intra_op_threads: int = setting(
        0,
        "training.intra_op_threads of every cell and of plain TFRS (0: TensorFlow's default); "
        "a pool sized once per process, so once for the whole run",
        min=0,
    )
    parts: list[str] = setting(
        list(TRAIN_PARTS), f"what to measure (device=cpu), of {', '.join(TRAIN_PARTS)}"
    )
    gpu_batches: list[int] = setting([4_096, 16_384], "device=gpu: global batch sizes")
    gpu_catalog: int = setting(100_000, "device=gpu: catalog items", min=1)

    def check(self) -> None:
        _check_names(self.parts, TRAIN_PARTS, "parts")
        if not self.catalogs:
            raise ConfigError("at least one catalog size", "catalogs")
        if "vocabulary" in self.parts and (not self.brands or min(self.brands) < 1):
            raise ConfigError(f"at least one value, each >= 1 (got {self.brands})", "brands")
        if min(self.catalogs) < self.clicked_items:
            raise ConfigError(
                f"the smallest catalog ({min(self.catalogs)}) is smaller than clicked_items "
                f"({self.clicked_items})",
                "catalogs",
            )


@dataclasses.dataclass(frozen=True)
class ScaleBench(Settings):
    """`twotower bench scale`: simulate -> preprocess -> train -> evaluate -> export ->
    serve at a user's scale, each stage's seconds and peak memory (docs/performance.md)."""

    QUICK: ClassVar[dict[str, Any]] = {
        "num_users": 300,
        "num_items": 500,
        "days": 3,
        "batch_size": 64,
        "retrievals": 30,
        "clients": 2,
        "k": 10,
        "memory_days": [],
    }

    num_users: int = setting(100_000, "simulated users", min=1)
    num_items: int = setting(100_000, "simulated catalog items", min=1)
    days: int = setting(10, "logged days (about 1M requests at the default sizes)", min=2)
    batch_size: int = setting(1_024, "training batch size", min=1)
    retrievals: int = setting(1_000, "requests sent through `twotower serve`", min=1)
    clients: int = setting(4, "concurrent clients of those requests", min=1)
    k: int = setting(100, "items per retrieval", min=1)
    memory_days: list[int] = setting(
        [30], "also simulate + preprocess this many days (memory against input size)"
    )
    keep: bool = setting(False, "keep the worlds, datasets and run under OUTPUT/scale/")


@dataclasses.dataclass(frozen=True)
class SoakBench(Settings):
    """`twotower bench soak`: the retrieval service under steady concurrent load while new
    versions are published; errors, status codes, latency and RSS growth."""

    QUICK: ClassVar[dict[str, Any]] = {
        "seconds": 6.0,
        "reloads": 1,
        "num_items": 2_000,
        "vocabulary": 1_000,
    }

    seconds: float = setting(60.0, "how long the load runs", min=1)
    clients: int = setting(8, "concurrent keep-alive clients", min=1)
    reloads: int = setting(2, "new export versions published during the load", min=0)
    bad_share: float = setting(
        0.1, "share of requests with a documented client error (unknown feature: 422)", min=0
    )
    num_items: int = setting(20_000, "synthetic corpus size", min=1)
    dim: int = setting(32, "embedding dimension", min=1)
    vocabulary: int = setting(10_000, "user and item id vocabulary of the query tower", min=1)
    k: int = setting(50, "k of every request", min=1)
    seed: int = setting(0, "random seed", min=0)


CONTENT_VARIANTS = (
    "ids+categorical",
    "ids+categorical+id_dropout",
    "content",
    "content+id_dropout",
    "content+cluster_catalog",
    "content+cluster_kmeans",
    "content+cluster_content",
)


@dataclasses.dataclass(frozen=True)
class ContentBench(Settings):
    """`twotower bench content`: content features and content clusters (docs/features.md)."""

    QUICK: ClassVar[dict[str, Any]] = {
        "worlds": ["default"],
        "world_scale": 0.1,
        "variants": ["ids+categorical", "content+id_dropout", "content+cluster_content"],
        "seeds": [1],
        "epochs": 1,
        "movielens": False,
    }

    worlds: list[str] = setting(
        ["default", "popularity-trap", "spread-tastes"],
        f"simulator presets, with item content vectors and late items, of {', '.join(PRESETS)}",
    )
    world_scale: float = setting(
        0.3, "users and items of every world, times the preset's", min=0.05
    )
    content_dim: int = setting(16, "the simulated items' content vector size", min=1)
    content_noise: float = setting(
        1.0, "noise of the content vectors, relative to the signal", min=0
    )
    cold_item_fraction: float = setting(
        0.1, "share of items held out of training (cold) in every dataset", min=0, max=0.9
    )
    variants: list[str] = setting(list(CONTENT_VARIANTS), "variants to train")
    seeds: list[int] = setting([1], "training seeds; results are mean ± std over them")
    epochs: int = setting(8, "epochs per run", min=1)
    movielens: bool = setting(
        True,
        "also MovieLens-100K with title + genres + year embedded by the text encoder: "
        "leave-last-click-out (HR@50/100) and with 10% of items cold",
    )

    def check(self) -> None:
        _check_names(self.worlds, tuple(PRESETS), "worlds")
        _check_names(self.variants, CONTENT_VARIANTS, "variants")


BENCHMARKS: dict[str, type] = {
    "pipeline": PipelineBench,
    "uma2": Uma2Bench,
    "negatives": NegativesBench,
    "distributed": DistributedBench,
    "serving": ServingBench,
    "debias": DebiasBench,
    "train": TrainBench,
    "scale": ScaleBench,
    "soak": SoakBench,
    "content": ContentBench,
}
