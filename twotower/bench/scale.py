"""`twotower bench scale`: the whole path at a user's scale, stage by stage.

simulate (num_users × num_items, `days` of logs) -> preprocess -> train one epoch ->
evaluate -> export (with the item index) -> `retrievals` requests through `twotower
serve`. Every stage is the real command in a child process (`python -m twotower ...`);
its wall time and peak resident memory (the child and all its descendants, sampled from
/proc, `twotower.bench.pipeline.tree_rss_bytes`) are recorded. With `memory_days`, the
logs are also simulated and preprocessed at those lengths (preprocessing memory against
the input size). Targets (docs/performance.md): the run within 15 minutes on 2 cores,
training at 10k examples/s or more, no stage above 4 GB.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common import contracts
from common.settings import to_dict
from twotower.bench.distributed import free_ports
from twotower.bench.load_client import run_load_in_subprocess
from twotower.bench.pipeline import SAMPLE_SECONDS, tree_rss_bytes
from twotower.bench.settings import ScaleBench
from twotower.report import format_table, save_results

TARGETS = {"total_seconds": 15 * 60, "examples_per_second": 10_000, "peak_rss_mb": 4096}


def measure(command: Sequence[str], log_path: str) -> dict[str, Any]:
    """Runs `command` to its end; its seconds and peak tree RSS (MB); output to `log_path`.

    Raises:
      RuntimeError: the command failed (its log's tail in the message).
    """
    with open(log_path, "w") as log:
        start = time.perf_counter()
        child = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT)
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss_bytes(child.pid))
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - start
    if child.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}:\n{tail}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20)}


def _twotower(*args: str) -> list[str]:
    return [sys.executable, "-m", "twotower", *args]


def _simulate(settings: ScaleBench, folder: str, days: int) -> list[str]:
    return _twotower(
        "simulate",
        "--output",
        folder,
        f"--num-users={settings.num_users}",
        f"--num-items={settings.num_items}",
        f"--days={days}",
        "--eval-days=1",
    )


def _preprocess(world: str, dataset: str) -> list[str]:
    return _twotower(
        "preprocess",
        "--set=data.source=simulator",
        f"--set=data.input={world}",
        "--set=data.split=time",
        "--output",
        dataset,
    )


def _request_bodies(dataset_dir: str, count: int, k: int) -> list[str]:
    """`count` one-user requests of known users, their features unknown (`[]`)."""
    with open(os.path.join(dataset_dir, contracts.MANIFEST_FILE)) as f:
        manifest = json.load(f)
    with open(os.path.join(dataset_dir, manifest["files"]["vocabularies"]["user_id"])) as f:
        users = [line.rstrip("\n") for line in f]
    with open(os.path.join(dataset_dir, manifest["files"]["item_frequency"])) as f:
        items = [line.split("\t")[0] for line in f]
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(count):
        history = [items[i] for i in rng.integers(len(items), size=int(rng.integers(0, 21)))]
        query = {
            "user_id": users[int(rng.integers(len(users)))],
            "history": history,
            "features": {name: [] for name in manifest["user_features"]},
        }
        bodies.append(json.dumps({"k": k, "queries": [query]}))
    return bodies


def _wait_healthy(url: str, child: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"twotower serve exited {child.returncode} before it was up")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"twotower serve not healthy within {timeout_s:.0f} s")


def serve_and_retrieve(
    export_dir: str, dataset_dir: str, settings: ScaleBench, log_path: str
) -> dict[str, Any]:
    """Starts `twotower serve`, sends `retrievals` requests, stops it; seconds (start-up
    included), the service's peak RSS and the load's latency."""
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    bodies = _request_bodies(dataset_dir, settings.retrievals, settings.k)
    with open(log_path, "w") as log:
        start = time.perf_counter()
        child = subprocess.Popen(
            _twotower("serve", f"--port={port}", export_dir), stdout=log, stderr=subprocess.STDOUT
        )
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_bytes(child.pid))
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _wait_healthy(url, child)
            startup = time.perf_counter() - start
            load = run_load_in_subprocess(url, bodies, settings.clients)
        finally:
            done.set()
            sampler.join()
            child.terminate()
            child.wait(timeout=60)
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(peak[0] / 2**20),
        "startup_seconds": round(startup, 1),
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in load.items()},
    }


def _examples_per_second(run_dir: str) -> float:
    with open(os.path.join(run_dir, contracts.RUN_FILE)) as f:
        run = json.load(f)
    return round(run["train_examples"] / run["train_seconds"], 1)


def run(settings: ScaleBench, output_dir: str, log: Callable[[str], Any] = print) -> dict:
    """Runs every stage; saves OUTPUT/scale.json and prints the table.

    Returns:
      {"stages": [{stage, seconds, peak_rss_mb, ...}], "total_seconds", "targets",
       "memory": [{days, requests, preprocess seconds and peak_rss_mb}], "settings"}.
    """
    work = os.path.join(output_dir, "scale")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    world, dataset = os.path.join(work, "world"), os.path.join(work, "dataset")
    run_dir = os.path.join(work, "run")
    stages = [
        ("simulate", _simulate(settings, world, settings.days)),
        ("preprocess", _preprocess(world, dataset)),
        (
            "train",
            _twotower(
                "train",
                "--data",
                dataset,
                "--run-dir",
                run_dir,
                "--set=training.epochs=1",
                f"--set=training.batch_size={settings.batch_size}",
                "--verbose=2",
                "--overwrite",
            ),
        ),
        ("evaluate", _twotower("evaluate", "--ground-truth", world, run_dir)),
        ("export", _twotower("export", run_dir)),
    ]
    rows = []
    for name, command in stages:
        log(f"{name} ...")
        row = {"stage": name, **measure(command, os.path.join(work, f"{name}.log"))}
        if name == "simulate":
            with open(os.path.join(world, "requests.jsonl")) as f:
                row["requests"] = sum(1 for _ in f)
        if name == "train":
            row["examples_per_second"] = _examples_per_second(run_dir)
        rows.append(row)
        log(f"  {row}")
    log("serve + retrievals ...")
    served = serve_and_retrieve(
        os.path.join(run_dir, contracts.EXPORT_DIR),
        dataset,
        settings,
        os.path.join(work, "serve.log"),
    )
    rows.append({"stage": f"serve + {settings.retrievals:,} retrievals", **served})
    log(f"  {rows[-1]}")
    memory = []
    for days in settings.memory_days:
        log(f"preprocessing memory at {days} days ...")
        folder, out = os.path.join(work, f"world-{days}"), os.path.join(work, f"dataset-{days}")
        measure(_simulate(settings, folder, days), os.path.join(work, f"simulate-{days}.log"))
        with open(os.path.join(folder, "requests.jsonl")) as f:
            requests = sum(1 for _ in f)
        measured = measure(_preprocess(folder, out), os.path.join(work, f"preprocess-{days}.log"))
        memory.append({"days": days, "requests": requests, **measured})
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    if memory:  # the main run's preprocessing, for the comparison
        memory.insert(
            0,
            {
                "days": settings.days,
                "requests": rows[0]["requests"],
                **{k: rows[1][k] for k in ("seconds", "peak_rss_mb")},
            },
        )
    total = round(sum(row["seconds"] for row in rows), 1)
    results = {
        "stages": rows,
        "total_seconds": total,
        "targets": TARGETS,
        "memory": memory,
        "settings": to_dict(settings),
        "cpus": os.cpu_count(),
    }
    save_results(results, output_dir, "scale")
    if not settings.keep:
        shutil.rmtree(work, ignore_errors=True)
    log(tables(results))
    return results


def tables(results: dict[str, Any]) -> str:
    """The stages table, the total against the targets, and the memory table."""
    columns = [
        "stage",
        "seconds",
        "peak_rss_mb",
        "requests",
        "examples_per_second",
        "p50_ms",
        "p99_ms",
        "errors",
    ]
    text = format_table(results["stages"], columns)
    targets = results["targets"]
    train = next(r for r in results["stages"] if r["stage"] == "train")
    peak = max(r["peak_rss_mb"] for r in results["stages"])
    text += (
        f"\n\ntotal {results['total_seconds']:.0f} s (target <= {targets['total_seconds']} s); "
        f"training {train['examples_per_second']:,.0f} examples/s (target >= "
        f"{targets['examples_per_second']:,}); largest stage {peak:,} MB (target <= "
        f"{targets['peak_rss_mb']:,} MB)"
    )
    if results["memory"]:
        text += "\n\npreprocessing against input size\n" + format_table(
            results["memory"], ["days", "requests", "seconds", "peak_rss_mb"]
        )
    return text
