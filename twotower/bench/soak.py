"""`twotower bench soak`: the retrieval service under steady load while versions change.

A synthetic export (random-weight query tower over a clustered corpus, written by the real
`write_export`) is served in this process; `clients` keep-alive connections in another
process post for at least `seconds` (and on after the last reload), a `bad_share` of
them a documented client error (an unknown user feature: 422); `reloads` new versions
are published at even intervals, each from a child process as `twotower export` would
(so the service's RSS is the service's), and the service hot-reloads them. Reported:
answers per status code, errors (5xx or a dropped connection: must be 0), latency, when
each version was served, and this process's RSS after the warm-up and at the end (growth
must stay under 10%).
"""

import json
import multiprocessing
import os
import queue
import tempfile
import time
from collections.abc import Callable
from typing import Any

from common.settings import to_dict
from serving.index_config import IndexConfig
from serving.retrieval_service import RetrievalService
from serving.service import run_in_thread
from serving.service_config import ServiceConfig
from twotower.bench.load_client import collect, run_load_in_subprocess, start_soak_in_subprocess
from twotower.bench.serving import synthetic_embeddings, synthetic_export, synthetic_users
from twotower.bench.settings import SoakBench
from twotower.report import format_table, save_results

RSS_GROWTH_LIMIT = 0.10


def rss_mb() -> float:
    """This process's resident set size (Linux /proc), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _bodies(config: SoakBench) -> list[str]:
    users = synthetic_users(1_000, config.vocabulary, config.vocabulary, config.seed + 3)
    every = round(1 / config.bad_share) if config.bad_share else 0
    bodies = []
    for i, user in enumerate(users):
        features = {"segment": user["user.segment"]}
        if every and i % every == 0:
            features["no_such_feature"] = "x"  # a documented 422
        query = {"user_id": user["user_id"], "history": user["history"], "features": features}
        bodies.append(json.dumps({"queries": [query], "k": config.k}))
    return bodies


def _publisher(export_dir: str, items: Any, index: IndexConfig, vocabulary: int, jobs, done):
    """A child process that exports one version per seed it receives (None ends it)."""
    while (seed := jobs.get()) is not None:
        synthetic_export(export_dir, items, index, vocabulary, seed)
        done.put(seed)


class _Publisher:
    """Exports new versions from a child process, as `twotower export` would: the export's
    TensorFlow work then stays out of the service's RSS. The child starts (and imports
    TensorFlow) before the load, so a publish costs the export alone."""

    def __init__(self, export_dir: str, items: Any, index: IndexConfig, vocabulary: int):
        context = multiprocessing.get_context("spawn")
        self._jobs, self._done = context.Queue(), context.Queue()
        self._child = context.Process(
            target=_publisher,
            args=(export_dir, items, index, vocabulary, self._jobs, self._done),
        )
        self._child.start()

    def publish(self, seed: int, timeout_s: float = 600) -> None:
        """Exports the version of `seed` and waits until it is published.

        Raises:
          RuntimeError: the child died or did not finish in time.
        """
        self._jobs.put(seed)
        try:
            self._done.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(
                f"the export of seed {seed} did not finish (child exit {self._child.exitcode})"
            ) from None

    def close(self) -> None:
        self._jobs.put(None)
        self._child.join(timeout=60)


def run(
    config: SoakBench, output_dir: str | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs the soak; prints a table and saves OUTPUT/soak.json.

    Returns:
      {"config", "load": {"requests", "statuses", "errors", "p50_ms", "p99_ms", ...},
      "reloads", "reload_errors", "final_version", "rss_mb": {"start", "end",
      "growth"}, "served_at_seconds" and "load_stopped_at_seconds" (one clock, from the
      load's start), "passed" (no error, every reload served while the load ran, RSS
      growth under 10%), "table"}.
    """
    items = synthetic_embeddings(config.num_items, config.dim, 50, config.seed)
    index = IndexConfig(kind="brute_force")
    with tempfile.TemporaryDirectory(prefix="twotower-soak-") as work:
        export_dir = os.path.join(work, "export")
        synthetic_export(export_dir, items, index, config.vocabulary, config.seed)
        service = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0.2))
        server = run_in_thread(service)
        publisher = _Publisher(export_dir, items, index, config.vocabulary)
        try:
            bodies = _bodies(config)
            run_load_in_subprocess(server.url, bodies[:200], config.clients)  # warm up
            start_rss = rss_mb()
            log(
                f"soak: {config.clients} clients for {config.seconds:g} s, "
                f"{config.reloads} new versions, RSS {start_rss:.0f} MB"
            )
            stop_file = os.path.join(work, "stop")
            load = start_soak_in_subprocess(
                server.url, bodies, config.clients, stop_file, max_seconds=10 * config.seconds
            )
            started = time.monotonic()
            served_at = []  # seconds into the load at which each new version was served
            for n in range(config.reloads):
                at = started + config.seconds * (n + 1) / (config.reloads + 1)
                time.sleep(max(0.0, at - time.monotonic()))
                publisher.publish(config.seed + 10 + n)
                while service.version != n + 2 and time.monotonic() < started + 2 * config.seconds:
                    time.sleep(0.05)
                served_at.append(round(time.monotonic() - started, 1))
                log(f"  version {n + 2} published and served at {served_at[-1]} s")
            # The load runs `seconds`, and on after the last reload for a tenth of that.
            end = max(started + config.seconds, time.monotonic() + config.seconds / 10)
            time.sleep(max(0.0, end - time.monotonic()))
            open(stop_file, "w").close()
            stopped_at = round(time.monotonic() - started, 1)
            result = collect(load)
            end_rss = rss_mb()
        finally:
            publisher.close()
            server.stop()
            service.close()
    growth = end_rss / start_rss - 1
    results = {
        "config": to_dict(config),
        "load": result,
        "reloads": service.reloads,
        "reload_errors": service.reload_errors,
        "final_version": service.version,
        "served_at_seconds": served_at,
        "load_stopped_at_seconds": stopped_at,
        "rss_mb": {"start": round(start_rss, 1), "end": round(end_rss, 1), "growth": growth},
        "passed": result["errors"] == 0
        and service.reloads == config.reloads
        and len(served_at) == config.reloads
        and all(t < stopped_at for t in served_at)
        and growth < RSS_GROWTH_LIMIT,
    }
    row = {
        "requests": result["requests"],
        "200": result["statuses"].get("200", 0),
        "422": result["statuses"].get("422", 0),
        "errors": result["errors"],
        "p50_ms": round(result["p50_ms"], 2),
        "p99_ms": round(result["p99_ms"], 2),
        "reloads": service.reloads,
        "rss_growth_%": round(100 * growth, 2),
    }
    results["table"] = format_table([row], list(row))
    log(results["table"])
    if output_dir:
        save_results(results, output_dir, "soak")
    return results
