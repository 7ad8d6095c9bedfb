"""The same logs, config and seed give the same dataset bytes and the same numbers
(issue 12): the demo pipeline twice, once with Beam in memory and once on two worker
processes, with `training.deterministic`."""

import os

import pytest

from common import contracts
from common.config import load_config
from twotower.demo import run_demo

IN_MEMORY = ("--runner=DirectRunner", "--direct_running_mode=in_memory")
TWO_PROCESSES = (
    "--runner=DirectRunner",
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    config = load_config(overrides=["training.epochs=1", "training.deterministic=true"])
    runs = []
    for name, beam_args in (("a", IN_MEMORY), ("b", TWO_PROCESSES)):
        work_dir = str(tmp_path_factory.mktemp(f"demo-{name}"))
        results = run_demo(config, work_dir, beam_args=beam_args, verbose=0, log=lambda _: None)
        runs.append((work_dir, results))
    return runs


def _shards(work_dir):
    dataset = os.path.join(work_dir, "dataset")
    names = sorted(n for n in os.listdir(dataset) if n.endswith(contracts.SHARD_SUFFIX))
    contents = {}
    for name in names:
        with open(os.path.join(dataset, name), "rb") as f:
            contents[name] = f.read()
    return contents


def test_the_dataset_is_the_same_byte_for_byte(two_runs):
    (a, _), (b, _) = two_runs
    first, second = _shards(a), _shards(b)
    assert len(first) >= 2 and first == second


def test_the_metrics_and_retrievals_are_the_same(two_runs):
    (_, first), (_, second) = two_runs
    assert first["metrics"]["methods"] == second["metrics"]["methods"]
    assert first["metrics"]["methods"]["two_tower"]["hit_rate@100"] > 0.2
    assert first["top_items"] == second["top_items"]
