"""`benchmark_serving` on a small corpus: every measurement present, JSON saved."""

import json
import os

from serving.item_index import IndexConfig
from twotower.bench.serving import RESULT_FILE, ServingBenchmarkConfig, benchmark_serving


def test_small_benchmark_reports_every_path(tmp_path):
    config = ServingBenchmarkConfig(
        num_items=5_000,
        num_clusters=50,
        k=10,
        num_queries=100,
        single_queries=20,
        batch_size=50,
        vocabulary=100,
        tower_calls=20,
        e2e_requests=60,
        e2e_clients=2,
        e2e_k=10,
        # partition_above=0 puts the tree in front of AH even at 5k items
        index=IndexConfig(kind="scann", partition_above=0),
    )
    lines = []
    result = benchmark_serving(config, output_dir=str(tmp_path), log=lines.append)
    assert result["scann"]["config"]["num_leaves"] == 71  # round(sqrt(5000))
    assert result["scann"]["recall"] >= 0.9
    assert result["e2e"]["requests"] == 60 and result["e2e"]["errors"] == 0
    for part in (result["brute_force"], result["scann"]):
        for mode in ("single", "batched_per_query"):
            assert 0 < part[mode]["p50_ms"] <= part[mode]["p99_ms"]
    assert result["query_tower"]["p50_ms"] > 0
    assert "POST /v1/retrieve" in result["table"] and result["table"] in lines
    with open(os.path.join(tmp_path, RESULT_FILE)) as f:
        assert json.load(f)["scann"]["recall"] == result["scann"]["recall"]
