"""`twotower bench serving`: ScaNN against brute force, the query tower, the service.

On a synthetic corpus (default 1M items, 32-d) this measures, in one run:
  1. recall@K of the ScaNN index against exact brute force, and the latency per query of
     both, one query at a time and in batches;
  2. the query tower's latency in process (a real `QueryTower` with random weights,
     exported by `trainer.export.write_export`, so it is the graph TF Serving would run);
  3. `POST /v1/retrieve` end to end over loopback HTTP: latency and requests/second
     from concurrent clients (the clients share the machine's cores with the server).

The corpus is a mixture of Gaussian clusters, as trained item embeddings are clustered;
queries are drawn from the same mixture. Uniform noise, which no real model produces,
is the hardest case for any partitioning index; `num_clusters=0` measures it.
"""

import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common.settings import to_dict
from serving.brute_force_index import BruteForceIndex
from serving.export_version import load_export_version
from serving.index_config import IndexConfig
from serving.index_io import IndexBuilder
from serving.item_index import ItemIndex
from serving.query_embedder import SavedModelEmbedder
from serving.query_features import feature_batch
from serving.retrieval_service import RetrievalService
from serving.service import run_in_thread
from serving.service_config import ServiceConfig
from twotower.bench.load_client import run_load_in_subprocess
from twotower.bench.settings import ServingBench
from twotower.report import format_table, save_results


def synthetic_embeddings(
    num: int, dim: int, num_clusters: int, seed: int, spread: float = 1.0
) -> np.ndarray:
    """`[num, dim]` float32 points around `num_clusters` standard-normal centres.

    `spread` is the noise around a centre relative to the centres' own scale: at 1.0 the
    clusters overlap heavily; `num_clusters=0` gives structureless N(0, I) points.
    """
    rng = np.random.default_rng(seed)
    if num_clusters == 0:
        return rng.normal(size=(num, dim)).astype(np.float32)
    centres = np.random.default_rng(12345).normal(size=(num_clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, num_clusters, num)]
    points += spread * rng.normal(size=(num, dim)).astype(np.float32)
    return points


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact, strict=True)]))


def _index_latency(
    index: ItemIndex, queries: np.ndarray, k: int, single: int, batch_size: int
) -> dict[str, Any]:
    index.search(queries[:1], k)  # first-call costs (allocations, lazy init) out of the timing
    one = [q[None] for q in queries[:single]]
    it = iter(one)
    single_times = _timed(lambda: index.search(next(it), k), len(one))
    batches = [queries[i : i + batch_size] for i in range(0, len(queries), batch_size)]
    it = iter(batches)
    batch_times = _timed(lambda: index.search(next(it), k), len(batches))
    per_query = [t / len(b) for t, b in zip(batch_times, batches, strict=True)]
    return {
        "single": _percentiles(single_times),
        "batched_per_query": _percentiles(per_query),
        "batch": _percentiles(batch_times),
    }


class _SyntheticModel:
    """What `write_export` needs of a model: a query tower and its embeddings (and no
    Multi-CLRec intention vectors)."""

    intentions = 0
    intention_layers: list = []

    def __init__(self, query_tower: Any):
        self.query_tower = query_tower

    def query_embeddings(self, features: dict[str, Any]) -> Any:
        return self.query_tower(features)


def synthetic_users(num: int, num_users: int, num_history: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "user_id": f"u{rng.integers(0, num_users * 11 // 10)}",  # ~10% unknown (OOV)
            "history": [f"i{j}" for j in rng.integers(0, num_history, rng.integers(0, 21))],
            "user.segment": f"s{rng.integers(0, 10)}",
        }
        for _ in range(num)
    ]


def synthetic_export(
    export_dir: str, embeddings: np.ndarray, index: IndexConfig, vocabulary: int, seed: int
) -> dict[str, Any]:
    """An export of a random-weight `QueryTower` over `embeddings` (the real export code)."""
    import tensorflow as tf  # noqa: PLC0415

    from trainer.export import write_export  # noqa: PLC0415
    from trainer.towers import QueryTower  # noqa: PLC0415

    tf.keras.utils.set_random_seed(seed)
    tower = QueryTower(
        user_vocabulary=[f"u{i}" for i in range(vocabulary)],
        item_ids=[f"i{i}" for i in range(vocabulary)],
        user_feature_vocabularies={"segment": [f"s{i}" for i in range(10)]},
        embedding_dim=32,
        hidden_units=[128],
        output_dim=embeddings.shape[1],
    )
    names = ["user_id", "history", "user.segment"]
    features = feature_batch(synthetic_users(64, vocabulary, vocabulary, seed), names)
    tower({k: tf.constant(v, dtype=tf.string) for k, v in features.items()})
    return write_export(
        export_dir,
        _SyntheticModel(tower),
        [f"item{i}" for i in range(len(embeddings))],
        embeddings,
        features,
        index=IndexBuilder(index),
        source={"synthetic": True, "seed": seed},
    )


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The printed table: one row per measured path."""
    brute, scann = result["brute_force"], result["scann"]
    rows = [
        {"what": "brute force, 1 query", **brute["single"]},
        {
            "what": f"brute force, batch of {result['config']['batch_size']} (per query)",
            **brute["batched_per_query"],
        },
        {
            "what": "ScaNN, 1 query",
            **scann["single"],
            "recall": scann["recall"],
            "speed-up (p50)": result["speedup_single_p50"],
        },
        {
            "what": f"ScaNN, batch of {result['config']['batch_size']} (per query)",
            **scann["batched_per_query"],
            "recall": scann["recall"],
            "speed-up (p50)": result["speedup_batched_p50"],
        },
        {"what": "query tower, in process (1 user)", **result["query_tower"]},
        {
            "what": f"POST /v1/retrieve, {result['e2e']['clients']} clients",
            **result["e2e"],
            "req/s": result["e2e"]["requests_per_second"],
        },
    ]
    return rows


def run(
    config: ServingBench, output_dir: str | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs the serving benchmark; prints a table and saves OUTPUT/serving.json.

    Args:
      config: sizes and the ScaNN config (default: 1M items, 32-d, K=100).
      output_dir: where serving.json goes (created); None saves nothing.
      log: progress and the final table.

    Returns:
      {"config", "scann": {"recall", "build_seconds", latencies...}, "brute_force",
      "speedup_single_p50", "speedup_batched_p50", "query_tower", "e2e", "table"}.
    """
    log(f"corpus: {config.num_items} items x {config.dim}-d, {config.num_clusters} clusters")
    items = synthetic_embeddings(
        config.num_items, config.dim, config.num_clusters, config.seed, config.spread
    )
    queries = synthetic_embeddings(
        config.num_queries, config.dim, config.num_clusters, config.seed + 1, config.spread
    )
    with tempfile.TemporaryDirectory(prefix="twotower-bench-") as work:
        export_dir = os.path.join(work, "export")
        log("export: random-weight query tower + ScaNN index (write_export)")
        manifest = synthetic_export(export_dir, items, config.index, config.vocabulary, config.seed)
        version = load_export_version(export_dir)
        brute = BruteForceIndex(items)
        log("brute force: exact top-K (the reference)")
        exact, _ = brute.search(queries, config.k)
        brute_result = _index_latency(
            brute, queries, config.k, config.single_queries, config.batch_size
        )
        log("ScaNN: recall and latency")
        found, _ = version.index.search(queries, config.k)
        scann_result = {
            "recall": _recall(found, exact),
            "build_seconds": manifest["index"]["build_seconds"],
            "config": manifest["index"]["config"],
            **_index_latency(
                version.index, queries, config.k, config.single_queries, config.batch_size
            ),
        }
        log("query tower: in process")
        embedder = SavedModelEmbedder(version.saved_model_dir)
        users = [
            feature_batch([u], version.inputs)
            for u in synthetic_users(
                config.tower_calls, config.vocabulary, config.vocabulary, config.seed + 2
            )
        ]
        embedder.embed(users[0])
        it = iter(users)
        tower = _percentiles(_timed(lambda: embedder.embed(next(it)), len(users)))
        log(f"end to end: {config.e2e_requests} requests from {config.e2e_clients} clients")
        service = RetrievalService(export_dir, ServiceConfig(reload_interval_s=0))
        server = run_in_thread(service)
        try:
            bodies = [
                json.dumps(
                    {
                        "queries": [
                            {
                                "user_id": u["user_id"],
                                "history": u["history"],
                                "features": {"segment": u["user.segment"]},
                            }
                        ],
                        "k": config.e2e_k,
                    }
                )
                for u in synthetic_users(
                    config.e2e_requests, config.vocabulary, config.vocabulary, config.seed + 3
                )
            ]
            run_load_in_subprocess(server.url, bodies[: min(50, len(bodies))], 1)  # warm up
            e2e = run_load_in_subprocess(server.url, bodies, config.e2e_clients)
        finally:
            server.stop()
            service.close()
    result = {
        "config": {**to_dict(config), "cpus": os.cpu_count()},
        "brute_force": brute_result,
        "scann": scann_result,
        "speedup_single_p50": brute_result["single"]["p50_ms"] / scann_result["single"]["p50_ms"],
        "speedup_batched_p50": brute_result["batched_per_query"]["p50_ms"]
        / scann_result["batched_per_query"]["p50_ms"],
        "query_tower": tower,
        "e2e": e2e,
    }
    columns = ["what", "p50_ms", "p99_ms", "recall", "speed-up (p50)", "req/s"]
    result["table"] = format_table(_rows(result), columns)
    log(result["table"])
    if output_dir:
        log(f"saved {save_results(result, output_dir, 'serving')}")
    return result
