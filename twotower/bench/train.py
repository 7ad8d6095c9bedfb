"""`twotower bench train`: time per training step, and what must not change it.

Every measurement trains through `trainer.train.train` (what `twotower train` runs) on
datasets preprocessed from synthetic logs (`twotower.bench.synthetic`): the same clicks on
`clicked_items` items, under catalogs of each size in `catalogs` (the extra items are
never clicked), so only the catalog differs. A step's time is the gap between two
consecutive ends of a batch (Keras's per-step Python work included), the median over
`steps` steps after `warmup`; every configuration is measured `rounds` times, the rounds
interleaved, and the fastest round's median is reported (the least disturbed by the rest
of the machine), with every round in the JSON.

Measured, in one run:
  - catalog: the default recipe at each catalog size; `ratio` = largest / smallest. Also
    the recipes of `CATALOG_RECIPES`, whose uniform draws meet more distinct items on a
    larger catalog (fewer repeats) until every draw is one.
  - queue: the cached CLRec queue at each `queue_sizes` (0: in-batch alone).
  - cluster: same-cluster hard negatives at each catalog size, catalog clusters and
    k-means clusters recomputed every `kmeans_every_steps` (mean step = refresh included).
  - history: the default recipe at each `history_lengths` (preprocessed again each).
  - vocabulary: the default and the momentum-cached CLRec queue with an extra item
    feature ("brand") of each of `brands` values (preprocessed again each); `ratio` =
    most / fewest values.
  - relative: the recipes of docs/negatives.md against the default, per example.
  - tfrs: TFRS's basic-retrieval model written plainly here (user and item id
    embeddings, `tfrs.tasks.Retrieval`, TFRS's own train step, the tutorial's input
    shape: the two ids parsed from the records) against `twotower train` configured to
    the same model (`model.inputs=ids`, no hidden layer, `negatives.loss=tfrs`).
  - input: the default model's input pipeline alone (read, shuffle, batch, parse).
  - optimizer: one sparse update of a `clicked_items`-row and a largest-catalog-row table
    per optimizer (the dense updates Keras's own SGD and Adam made).

With `device=gpu` the run is the accelerator check instead (docs/performance.md): global
batches × {base, queue of 10× the batch, UMA², base compiled by XLA} × mixed precision
off/on, with the paper's 512-256-128-32 towers, GPU utilisation sampled by nvidia-smi.
"""

import gc
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from common import contracts
from common.config import ConfigError, load_config
from common.settings import to_dict
from pipelines.preprocess import preprocess
from trainer.dataset import load_dataset, make_dataset, parallel_reads
from trainer.distribute import set_op_threads
from trainer.optimizers import OPTIMIZERS, make_optimizer
from trainer.train import train
from twotower.bench import synthetic
from twotower.bench.recipes import RECIPES
from twotower.bench.runner import IN_MEMORY_BEAM
from twotower.bench.settings import TrainBench
from twotower.report import format_table, save_results

RELATIVE = ("clrec_cached", "uma2", "cluster", "multi_clrec")  # against "default"
# Multi-CLRec's recipe re-encodes its queues' items every step (queue_mode=ids); the same
# with cached embeddings, for the cost of the intentions themselves.
# Cluster negatives drawn once per distinct cluster of the batch (negatives.cluster_shared):
# cheaper, and a little lower in quality (docs/negatives.md). UMA²'s Space C drawn per row
# from a pool of 512 catalog items a step (negatives.space_c_pool), its heads learning from 4
# of each row's 20 (uma2.head_space_c; docs/uma2.md). CLRec's queue as docs/negatives.md
# advises it: cached by a momentum item tower, 2x the batch (the id queue's quality; the
# plain cached queue of clrec_cached collapses). Multi-CLRec on that queue: its intention
# queues cache the momentum tower's embeddings too.
EXTRA = {
    "clrec_momentum_1024": RECIPES["clrec_momentum_1024"],
    "multi_clrec_cached": [*RECIPES["multi_clrec"], "negatives.queue_mode=embeddings"],
    "multi_clrec_momentum_1024": RECIPES["multi_clrec_momentum_1024"],
    "cluster_shared": [*RECIPES["cluster"], "negatives.cluster_shared=true"],
    "uma2_pool": RECIPES["uma2_pool"],
}
# Timed at each catalog size beside the default: UMA²'s per-row uniform Space C draws (batch
# x 20) meet more distinct items, each through the item tower and its sparse updates, as
# the catalog grows; with the pool at most 512 (docs/performance.md).
CATALOG_RECIPES = ("uma2", "uma2_pool")
# Timed with an item feature of each vocabulary size (`brands`): the default, and the
# momentum queue, whose copy of the item tower follows every embedding table.
VOCABULARY_RECIPES = ("default", "clrec_momentum_1024")
# Targets of docs/performance.md: per-example cost against the default, at most.
RELATIVE_TARGETS = {
    "clrec_cached": 1.3,
    "clrec_momentum_1024": 1.3,
    "uma2": 2.0,
    "uma2_pool": 2.0,
    "cluster": 1.5,
    "cluster_shared": 1.5,
    "multi_clrec": 2.0,
    "multi_clrec_cached": 2.0,
    "multi_clrec_momentum_1024": 2.0,
}
TFRS_IDS = [
    "model.inputs=ids",
    "model.hidden_units=[]",
    # The tutorial's towers are the id embeddings themselves: no dense layer.
    "model.output_projection=false",
    "negatives.loss=tfrs",
    "negatives.in_batch_correction=none",
    "negatives.exposure_correction=none",
    # As the tutorial's model: its Retrieval task keeps accidental hits, and it writes no
    # summaries.
    "negatives.remove_accidental_hits=false",
    "training.summary_every_steps=0",
]
STEPS_PER_EXECUTION = 8  # the TFRS comparison's second twotower run
PAPER_TOWERS = ["model.hidden_units=[512,256,128]", "model.output_dim=32"]


class StepTimer(tf.keras.callbacks.Callback):
    """Records the time between consecutive batch ends, per step (with
    steps_per_execution > 1 Keras reports once per call); stops training after
    `warmup + steps` steps."""

    def __init__(self, warmup: int, steps: int):
        super().__init__()
        self._warmup, self._steps = warmup, steps
        self._ends: list[tuple[float, int]] = []  # (time, steps done)
        self._done = 0
        self._last: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._last = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._done += batch + 1 if self._last is None else batch - self._last
        self._last = batch
        self._ends.append((time.perf_counter(), self._done))
        if self._done > self._warmup + self._steps:
            self.model.stop_training = True

    def seconds(self) -> list[float]:
        """The measured steps' durations (after the warm-up), each call's time split
        evenly over its steps."""
        measured = [(t, n) for t, n in self._ends if n > self._warmup]
        durations = []
        for (t0, n0), (t1, n1) in zip(measured, measured[1:], strict=False):
            durations += [(t1 - t0) / (n1 - n0)] * (n1 - n0)
        return durations


def _summary(seconds: list[float], batch_size: int) -> dict[str, float]:
    if not seconds:
        raise RuntimeError("no step was timed: the dataset is shorter than the warm-up")
    median = statistics.median(seconds)
    return {
        "median_ms": round(1000 * median, 3),
        "mean_ms": round(1000 * statistics.fmean(seconds), 3),
        "examples_per_second": round(batch_size / median, 1),
        "steps": len(seconds),
    }


def _prepare(
    work_dir: str,
    name: str,
    settings: TrainBench,
    catalog: int,
    overrides: Sequence[str] = (),
    log: Callable[[str], Any] = print,
    brands: int = 0,
) -> str:
    """A dataset of the bench's synthetic clicks under a `catalog`-item catalog, its items
    with a "brand" feature of `brands` values if > 0 (made once, reused when present)."""
    directory = os.path.join(work_dir, f"dataset-{name}")
    if os.path.exists(os.path.join(directory, contracts.MANIFEST_FILE)):
        return directory
    logs = os.path.join(work_dir, f"logs-{catalog}" + (f"-brands{brands}" if brands else ""))
    if not os.path.exists(os.path.join(logs, synthetic.CATALOG_FILE)):
        synthetic.write_synthetic_logs(
            logs,
            settings.requests,
            num_items=min(settings.clicked_items, catalog),
            catalog_size=catalog,
            expose_size=10,
            click_rate=0.1,
            brands=brands,
        )
    log(f"preprocessing {name} ({catalog:,} catalog items) -> {directory}")
    config = load_config(
        overrides=[
            "data.source=logs",
            f"data.input={os.path.join(logs, synthetic.REQUESTS_FILE)}",
            f"data.catalog={os.path.join(logs, synthetic.CATALOG_FILE)}",
            *overrides,
        ]
    )
    preprocess(config, directory, beam_args=IN_MEMORY_BEAM, overwrite=True)
    return directory


def time_training(
    dataset_dir: str, overrides: Sequence[str], settings: TrainBench, work_dir: str
) -> list[float]:
    """Step durations (seconds) of `twotower train` with `overrides` on `dataset_dir`."""
    config = load_config(
        overrides=[
            f"training.batch_size={settings.batch_size}",
            f"training.intra_op_threads={settings.intra_op_threads}",
            "training.epochs=1000",  # the timer stops it
            *overrides,
        ]
    )
    timer = StepTimer(settings.warmup, settings.steps)
    run_dir = tempfile.mkdtemp(prefix="run-", dir=work_dir)
    try:
        train(config, dataset_dir, run_dir, verbose=0, callbacks=[timer])
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return timer.seconds()


def plain_tfrs_seconds(dataset_dir: str, settings: TrainBench) -> list[float]:
    """Step durations of TFRS's basic-retrieval model, written as its tutorial does."""
    import tensorflow_recommenders as tfrs  # noqa: PLC0415

    dataset = load_dataset(dataset_dir)
    users = dataset.vocabularies["user_id"]
    items = dataset.item_ids

    def tower(vocabulary: list[str]) -> tf.keras.Model:
        # A numpy vocabulary: a Python list would be walked by Keras at every step.
        lookup = tf.keras.layers.StringLookup(vocabulary=np.array(vocabulary), mask_token=None)
        return tf.keras.Sequential([lookup, tf.keras.layers.Embedding(len(vocabulary) + 1, 32)])

    class Retrieval(tfrs.Model):
        def __init__(self) -> None:
            super().__init__()
            self.user_model, self.item_model = tower(users), tower(items)
            self.task = tfrs.tasks.Retrieval()

        def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> Any:
            return self.task(
                self.user_model(features["user_id"]), self.item_model(features["item_id"])
            )

    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in ("user_id", "item_id")}
    data = (
        tf.data.TFRecordDataset(dataset.files("train"), compression_type="GZIP")
        .shuffle(20_000, seed=42, reshuffle_each_iteration=True)
        .batch(settings.batch_size, drop_remainder=True)
        .map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    tf.keras.utils.set_random_seed(42)
    model = Retrieval()
    model.compile(optimizer=make_optimizer("adagrad", 0.05))
    timer = StepTimer(settings.warmup, settings.steps)
    model.fit(
        data,
        epochs=1,
        steps_per_epoch=settings.warmup + settings.steps + 1,
        verbose=0,
        callbacks=[timer],
    )
    return timer.seconds()


def input_seconds(dataset_dir: str, settings: TrainBench) -> list[float]:
    """Batch durations of the default model's input pipeline alone (what `train` reads)."""
    config = load_config()
    data = make_dataset(
        load_dataset(dataset_dir),
        "train",
        settings.batch_size,
        shuffle=True,
        seed=config.training.seed,
        shuffle_buffer=config.training.shuffle_buffer,
        drop_remainder=True,
        parallel=parallel_reads(config.training.parallel_reads),
    ).repeat()
    iterator = iter(data)
    ends = []
    for _ in range(settings.warmup + settings.steps + 1):
        next(iterator)
        ends.append(time.perf_counter())
    return np.diff(ends[settings.warmup :]).tolist()


def optimizer_milliseconds(rows: int, touched: int, batch: int) -> dict[str, float]:
    """Milliseconds of one gather + sparse update of a `rows`-row table, per optimizer;
    the batch looks up `batch` rows among the first `touched`."""
    result = {}
    indices = tf.constant(np.random.default_rng(0).integers(touched, size=batch), tf.int64)
    for name in OPTIMIZERS:
        table = tf.Variable(tf.random.uniform([rows, 32]))
        optimizer = make_optimizer(name, 0.01)

        @tf.function
        def step(table: tf.Variable = table, optimizer: Any = optimizer) -> None:
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table, indices) ** 2)
            optimizer.apply_gradients([(tape.gradient(loss, table), table)])

        step()
        start = time.perf_counter()
        for _ in range(20):
            step()
        result[name] = round((time.perf_counter() - start) / 20 * 1000, 3)
        del table
    return result


def loss_milliseconds(batch: int, queue: int, dim: int = 32, steps: int = 40) -> dict[str, float]:
    """Milliseconds of the softmax loss alone (forward and gradients, in a `tf.function`):
    the trainer's (`losses.softmax_loss`: in-batch negatives with logQ, a cached queue of
    `queue` slots, accidental hits masked, temperature 0.1) and its floor, the same
    scores' bare log-softmax (matmuls, log-sum-exp, gradients; no mask, no correction)."""
    from trainer import losses  # noqa: PLC0415
    from trainer.negatives.candidates import Candidates  # noqa: PLC0415

    rng = np.random.default_rng(0)
    query, positive = (tf.Variable(rng.normal(size=(batch, dim)).astype("float32")) for _ in "qp")
    items = tf.constant(rng.normal(size=(max(queue, 1), dim)).astype("float32"))[:queue]
    ids = tf.constant(rng.integers(0, 10_000, batch), tf.int64)
    queue_ids = tf.constant(rng.integers(0, 10_000, queue), tf.int64)
    log_q = tf.constant(rng.normal(size=batch).astype("float32"))

    def trainer_loss(q: tf.Tensor, p: tf.Tensor) -> tf.Tensor:
        sources = [Candidates("in_batch", "other", ids, p, log_q=log_q, exclude_diagonal=True)]
        if queue:
            valid = tf.ones([queue], tf.bool)
            sources.append(Candidates("queue", "other", queue_ids, items, valid=valid))
        return losses.softmax_loss(q, p, ids, log_q, sources, temperature=0.1)

    def floor(q: tf.Tensor, p: tf.Tensor) -> tf.Tensor:
        q = q / 0.1
        logits = tf.concat(
            [tf.matmul(q, p, transpose_b=True), tf.matmul(q, items, transpose_b=True)], 1
        )
        return tf.reduce_logsumexp(logits, axis=1) - tf.reduce_sum(q * p, axis=1)

    result = {}
    for name, loss in (("softmax_ms", trainer_loss), ("floor_ms", floor)):

        @tf.function
        def step(loss: Callable = loss) -> tf.Tensor:
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(loss(tf.math.l2_normalize(query, 1), positive))
            return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(total, [query, positive])])

        for _ in range(5):
            step()
        durations = []
        for _ in range(steps):
            start = time.perf_counter()
            step().numpy()
            durations.append(time.perf_counter() - start)
        result[name] = round(1000 * statistics.median(durations), 3)
    return result


def _measure_rounds(
    cells: dict[str, Callable[[], list[float]]], rounds: int, batch: int, log: Callable
) -> dict[str, dict[str, Any]]:
    """Runs every cell `rounds` times, rounds interleaved; keeps the fastest round.

    Each cell starts from a cleared Keras state, as a `twotower train` process does: the
    bench builds about 45 models in one process, and without it the later cells ran in
    the leftovers of the earlier ones (the ids-only model's rounds spread by 30% at the
    end of a full run, 3.4-3.7 ms a step run alone).
    """
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in cells}
    for round_ in range(rounds):
        for name, cell in cells.items():
            tf.keras.backend.clear_session()  # Keras's global state of the earlier cells
            gc.collect()  # their input pipelines' threads and buffers
            summary = _summary(cell(), batch)
            measured[name].append(summary)
            log(f"  round {round_ + 1}/{rounds} {name}: {summary['median_ms']:.1f} ms/step")
    return {
        name: {**min(summaries, key=lambda s: s["median_ms"]), "rounds": summaries}
        for name, summaries in measured.items()
    }


def run_cpu(settings: TrainBench, output_dir: str, log: Callable[[str], Any] = print) -> dict:
    work = os.path.join(output_dir, "train")
    os.makedirs(work, exist_ok=True)
    parts = set(settings.parts)
    smallest, largest = min(settings.catalogs), max(settings.catalogs)
    sizes = settings.catalogs if parts & {"catalog", "cluster"} else [smallest]
    catalogs = {c: _prepare(work, str(c), settings, c, log=log) for c in sizes}
    base = catalogs[smallest]
    default_history = load_config().data.history_length  # that one is the catalog's
    histories = {
        h: base
        if h == default_history
        else _prepare(
            work, f"{smallest}-h{h}", settings, smallest, [f"data.history_length={h}"], log
        )
        for h in (settings.history_lengths if "history" in parts else [])
    }
    per_recipe = {**{name: RECIPES[name] for name in RELATIVE}, **EXTRA}
    kmeans = [
        "negatives.cluster_source=kmeans",
        f"negatives.kmeans_every_steps={settings.kmeans_every_steps}",
    ]
    cells: dict[str, Callable[[], list[float]]] = {}

    def cell(name: str, directory: str, overrides: Sequence[str]) -> None:
        cells[name] = lambda: time_training(directory, overrides, settings, work)

    for size, directory in catalogs.items():
        # The smallest catalog's default is also the baseline of "relative" and "input".
        if "catalog" in parts or size == smallest:
            cell(f"catalog/{size}", directory, [])
        for recipe in CATALOG_RECIPES if "catalog" in parts else ():
            cell(f"catalog/{recipe}/{size}", directory, RECIPES[recipe])
        if "cluster" in parts:
            cell(f"cluster/catalog/{size}", directory, RECIPES["cluster"])
            cell(f"cluster/kmeans/{size}", directory, [*RECIPES["cluster"], *kmeans])
    brand_catalog = max([smallest, *settings.brands])  # brands may be empty when not timed
    for brands in settings.brands if "vocabulary" in parts else []:
        directory = _prepare(
            work, f"{brand_catalog}-brands{brands}", settings, brand_catalog, log=log, brands=brands
        )
        for recipe in VOCABULARY_RECIPES:
            cell(f"vocabulary/{recipe}/{brands}", directory, RECIPES[recipe])
    for size in settings.queue_sizes if "queue" in parts else []:  # 0: without its queue
        cell(f"queue/{size}", base, [*RECIPES["clrec_cached"], f"negatives.queue_size={size}"])
    for length, directory in histories.items():
        cell(f"history/{length}", directory, [])
    for name, overrides in per_recipe.items() if "relative" in parts else []:
        cell(f"relative/{name}", base, overrides)
    if "tfrs" in parts:
        cell("tfrs/twotower", base, TFRS_IDS)
        cell(
            f"tfrs/twotower_spe{STEPS_PER_EXECUTION}",
            base,
            [*TFRS_IDS, f"training.steps_per_execution={STEPS_PER_EXECUTION}"],
        )
        # The plain model's own input: full batches only (static shapes).
        cell("tfrs/twotower_full", base, [*TFRS_IDS, "training.drop_remainder=true"])
        cells["tfrs/plain"] = lambda: plain_tfrs_seconds(base, settings)
    if "input" in parts:
        cells["input/default"] = lambda: input_seconds(base, settings)
    log(f"timing {len(cells)} configurations x {settings.rounds} rounds ...")
    timed = _measure_rounds(cells, settings.rounds, settings.batch_size, log)

    def ms(name: str) -> float:
        return timed[name]["median_ms"]

    def curve(prefix: str, values: Sequence[int]) -> dict[str, Any]:
        """The cells `prefix/value` of each value; `ratio`: largest value's / smallest's."""
        return {
            "median_ms": [ms(f"{prefix}/{v}") for v in values],
            "ratio": round(ms(f"{prefix}/{max(values)}") / ms(f"{prefix}/{min(values)}"), 3),
        }

    # The default on the smallest catalog is timed twice when the history curve holds the
    # default length (the same configuration, the same dataset): the faster is the
    # baseline of the relative costs and the input, as the fastest round is each cell's.
    same = [
        f"catalog/{smallest}",
        *([f"history/{default_history}"] * (default_history in histories)),
    ]
    default_cell = min(same, key=ms)
    default = ms(default_cell)
    results: dict[str, Any] = {"settings": to_dict(settings), "cpus": os.cpu_count()}
    results["timed"] = timed
    results["default"] = {"median_ms": default, "cell": default_cell, "cells": same}
    if "catalog" in parts:
        results["catalog"] = {
            "sizes": list(settings.catalogs),
            **curve("catalog", settings.catalogs),
            "recipes": {
                recipe: curve(f"catalog/{recipe}", settings.catalogs) for recipe in CATALOG_RECIPES
            },
        }
    if "cluster" in parts:
        results["cluster"] = {
            "sizes": list(settings.catalogs),
            **{
                source: {
                    "median_ms": [ms(f"cluster/{source}/{c}") for c in settings.catalogs],
                    "mean_ms": [
                        timed[f"cluster/{source}/{c}"]["mean_ms"] for c in settings.catalogs
                    ],
                }
                for source in ("catalog", "kmeans")
            },
        }
    if "queue" in parts:
        results["queue"] = {
            "sizes": list(settings.queue_sizes),
            "median_ms": [ms(f"queue/{q}") for q in settings.queue_sizes],
        }
    if "vocabulary" in parts:
        results["vocabulary"] = {
            "brands": list(settings.brands),
            "catalog": brand_catalog,
            **{
                recipe: curve(f"vocabulary/{recipe}", settings.brands)
                for recipe in VOCABULARY_RECIPES
            },
        }
    if "history" in parts:
        results["history"] = {
            "lengths": list(settings.history_lengths),
            "median_ms": [ms(f"history/{h}") for h in settings.history_lengths],
        }
    if "relative" in parts:
        results["relative"] = {
            name: round(ms(f"relative/{name}") / default, 3) for name in per_recipe
        }
        results["relative_targets"] = RELATIVE_TARGETS
    if "tfrs" in parts:
        results["tfrs"] = {
            "plain_examples_per_second": timed["tfrs/plain"]["examples_per_second"],
            "twotower_examples_per_second": timed["tfrs/twotower"]["examples_per_second"],
            "ratio": round(ms("tfrs/plain") / ms("tfrs/twotower"), 3),
            "steps_per_execution": STEPS_PER_EXECUTION,
            "ratio_steps_per_execution": round(
                ms("tfrs/plain") / ms(f"tfrs/twotower_spe{STEPS_PER_EXECUTION}"), 3
            ),
            "ratio_full_batches": round(ms("tfrs/plain") / ms("tfrs/twotower_full"), 3),
        }
    if "input" in parts:
        results["input"] = {
            "examples_per_second": timed["input/default"]["examples_per_second"],
            "training_examples_per_second": timed[default_cell]["examples_per_second"],
            "ratio": round(default / ms("input/default"), 3),
        }
    if "loss" in parts:
        queue = 10 * settings.batch_size  # the relative recipes' cached queue
        results["loss"] = {
            "batch": settings.batch_size,
            "queue": queue,
            "without_queue": loss_milliseconds(settings.batch_size, 0),
            "with_queue": loss_milliseconds(settings.batch_size, queue),
        }
    if "optimizer" in parts:
        results["optimizer_ms"] = {
            str(rows): optimizer_milliseconds(
                rows, settings.clicked_items, settings.batch_size * 21
            )
            for rows in (smallest, largest)
        }
    return results


def _gpu_sampler(stop: threading.Event, samples: list[float]) -> None:
    while not stop.is_set():
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
            samples.append(float(out.split()[0]))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return
        stop.wait(0.5)


def gpu_devices() -> list[str]:
    """The GPUs TensorFlow sees, by name."""
    return [device.name for device in tf.config.list_physical_devices("GPU")]


# The accelerator check's cells: (variant, its overrides at a global batch, XLA). XLA is
# measured on the base model only (the recipes that compile: docs/performance.md).
def _gpu_cells(batch: int) -> list[tuple[str, list[str], bool]]:
    queue = [*RECIPES["clrec_cached"], f"negatives.queue_size={10 * batch}"]
    return [
        ("base", [], False),
        ("queue", queue, False),
        ("uma2", RECIPES["uma2"], False),
        ("base", [], True),
    ]


def run_gpu(settings: TrainBench, output_dir: str, log: Callable[[str], Any] = print) -> dict:
    devices = gpu_devices()
    if not devices:
        raise RuntimeError("device=gpu: TensorFlow sees no GPU on this machine")
    work = os.path.join(output_dir, "train")
    os.makedirs(work, exist_ok=True)
    size = settings.gpu_catalog
    directory = _prepare(work, str(size), settings, size, log=log)
    rows = []
    for batch in settings.gpu_batches:
        for variant, overrides, jit in _gpu_cells(batch):
            for mixed in (False, True):
                stop, samples = threading.Event(), []
                sampler = threading.Thread(target=_gpu_sampler, args=(stop, samples), daemon=True)
                sampler.start()
                local = TrainBench(**{**to_dict(settings), "batch_size": batch})
                row = {"batch": batch, "variant": variant, "mixed_precision": mixed, "xla": jit}
                try:
                    seconds = time_training(
                        directory,
                        [
                            *PAPER_TOWERS,
                            *overrides,
                            f"training.mixed_precision={str(mixed).lower()}",
                            f"training.jit_compile={str(jit).lower()}",
                        ],
                        local,
                        work,
                    )
                    row.update(_summary(seconds, batch))
                except ConfigError as error:  # a step XLA cannot compile: the cell says so
                    row["error"] = str(error)
                finally:
                    stop.set()
                    sampler.join()
                row["gpu_utilisation"] = round(statistics.fmean(samples), 1) if samples else None
                rows.append(row)
                log(f"  {row}")
    return {"settings": to_dict(settings), "gpu": rows, "devices": devices}


def tables(results: dict[str, Any]) -> str:
    """The printed summary (the parts measured)."""
    if "gpu" in results:
        columns = [
            "batch",
            "variant",
            "mixed_precision",
            "xla",
            "examples_per_second",
            "median_ms",
            "gpu_utilisation",
        ]
        if any("error" in row for row in results["gpu"]):
            columns.append("error")
        return format_table(results["gpu"], columns)
    rows = []

    def row(measure: str, value: Any, target: str = "") -> None:
        rows.append({"measure": measure, "value": value, "target": target})

    if "catalog" in results:
        catalog = results["catalog"]
        for c, m in zip(catalog["sizes"], catalog["median_ms"], strict=True):
            row(f"default, {c:,}-item catalog (ms/step)", m)
        row("largest / smallest catalog", catalog["ratio"], "<= 1.2")
        for recipe, values in catalog.get("recipes", {}).items():
            for c, m in zip(catalog["sizes"], values["median_ms"], strict=True):
                row(f"{recipe}, {c:,}-item catalog (ms/step)", m)
            row(f"{recipe}: largest / smallest catalog", values["ratio"])
    if "cluster" in results:
        cluster = results["cluster"]
        for source in ("catalog", "kmeans"):
            values = cluster[source]
            for c, m, mean in zip(
                cluster["sizes"], values["median_ms"], values["mean_ms"], strict=True
            ):
                note = f"mean {mean:.1f} with refreshes" if source == "kmeans" else ""
                row(f"cluster ({source}), {c:,} items (ms/step)", m, note)
    if "vocabulary" in results:
        vocabulary = results["vocabulary"]
        for recipe in VOCABULARY_RECIPES:
            values = vocabulary[recipe]
            for b, m in zip(vocabulary["brands"], values["median_ms"], strict=True):
                row(f"{recipe}, item feature of {b:,} values (ms/step)", m)
            row(f"{recipe}: largest / smallest vocabulary", values["ratio"], "<= 1.2")
    if "queue" in results:
        for q, m in zip(results["queue"]["sizes"], results["queue"]["median_ms"], strict=True):
            row(f"cached queue {q:,} (ms/step)", m)
    if "history" in results:
        history = results["history"]
        for h, m in zip(history["lengths"], history["median_ms"], strict=True):
            row(f"history_length {h} (ms/step)", m)
    if "relative" in results:
        baseline = results["default"]
        row(
            "default, the baseline below (ms/step)", f"{baseline['median_ms']} ({baseline['cell']})"
        )
    for name, ratio in results.get("relative", {}).items():
        target = RELATIVE_TARGETS.get(name)
        row(f"{name} / default (per example)", ratio, f"<= {target}" if target else "")
    if "tfrs" in results:
        tfrs_ = results["tfrs"]
        row("twotower ids-only / plain TFRS (examples/s)", tfrs_["ratio"], ">= 0.9")
        row(
            f"  the same, steps_per_execution={tfrs_['steps_per_execution']}",
            tfrs_["ratio_steps_per_execution"],
            ">= 0.9",
        )
        row("  the same, full batches only (drop_remainder)", tfrs_["ratio_full_batches"], ">= 0.9")
    if "input" in results:
        row("input pipeline / training (examples/s)", results["input"]["ratio"], ">= 3")
    if "loss" in results:
        loss = results["loss"]
        for key, label in (
            ("without_queue", "no queue"),
            ("with_queue", f"queue {loss['queue']:,}"),
        ):
            values = loss[key]
            row(
                f"softmax loss alone, {label} (ms)",
                f"{values['softmax_ms']} (floor {values['floor_ms']})",
            )
    for size, values in results.get("optimizer_ms", {}).items():
        text = ", ".join(f"{k} {v}" for k, v in values.items())
        row(f"sparse update, {int(size):,}-row table (ms)", text)
    return format_table(rows, ["measure", "value", "target"])


def plot(results: dict[str, Any], path: str) -> None:
    """Step time against catalog size, queue size, history length and an item feature's
    vocabulary; the recipes' cost per example against the default, with their targets.
    Parts not measured stay empty."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(1, 5, figsize=(21, 3.8))
    if "catalog" in results:
        sizes = results["catalog"]["sizes"]
        axes[0].plot(sizes, results["catalog"]["median_ms"], "o-", label="default")
        for recipe, values in results["catalog"].get("recipes", {}).items():
            axes[0].plot(sizes, values["median_ms"], "^-.", label=recipe)
    for source in ("catalog", "kmeans") if "cluster" in results else ():
        values, sizes = results["cluster"][source], results["cluster"]["sizes"]
        axes[0].plot(sizes, values["median_ms"], "s--", label=f"cluster ({source})")
        if source == "kmeans":
            axes[0].plot(sizes, values["mean_ms"], "x:", label="cluster (kmeans), mean")
    axes[0].set(xscale="log", xlabel="catalog items", ylabel="ms per step", ylim=(0, None))
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    if "queue" in results:
        axes[1].plot(results["queue"]["sizes"], results["queue"]["median_ms"], "o-")
    axes[1].set(xlabel="negatives.queue_size (cached)", ylabel="ms per step", ylim=(0, None))
    if "history" in results:
        axes[2].plot(results["history"]["lengths"], results["history"]["median_ms"], "o-")
    axes[2].set(xlabel="data.history_length", ylabel="ms per step", ylim=(0, None))
    for recipe in VOCABULARY_RECIPES if "vocabulary" in results else ():
        vocabulary = results["vocabulary"]
        axes[3].plot(vocabulary["brands"], vocabulary[recipe]["median_ms"], "o-", label=recipe)
        axes[3].legend(fontsize=8)
    axes[3].set(
        xscale="log", xlabel="values of an item feature", ylabel="ms per step", ylim=(0, None)
    )
    relative = results.get("relative", {})
    names = list(relative)
    axes[4].barh(names, [relative[n] for n in names], color="tab:blue")
    targets = [(i, RELATIVE_TARGETS[n]) for i, n in enumerate(names) if n in RELATIVE_TARGETS]
    if targets:
        rows, values = zip(*targets, strict=True)
        axes[4].plot(values, rows, "k|", markersize=14, label="target")
        axes[4].legend(fontsize=8)
    axes[4].axvline(1.0, color="grey", linewidth=0.8)
    axes[4].set(xlabel="time per example / default's")
    axes[4].invert_yaxis()
    axes[4].tick_params(axis="y", labelsize=8)
    figure.suptitle(f"time per step, batch {results['settings']['batch_size']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(settings: TrainBench, output_dir: str, log: Callable[[str], Any] = print) -> dict:
    """Runs the benchmark; saves OUTPUT/train.json (and train.png on CPU), prints the table.

    Returns:
      The results (see the module docstring), as saved.
    """
    settings.check()
    # Before any TensorFlow work (the datasets' preprocessing starts it): the pool is sized
    # once per process, and every cell then asks for the same size.
    set_op_threads(settings.intra_op_threads, 0)
    if settings.device == "gpu":
        results = run_gpu(settings, output_dir, log)
    else:
        results = run_cpu(settings, output_dir, log)
    save_results(results, output_dir, "train")
    if settings.device == "cpu":
        plot(results, os.path.join(output_dir, "train.png"))
    log(tables(results))
    return results
