"""The same logs, config and seed give the same dataset bytes and the same numbers
(issue 12): the demo pipeline twice with `training.deterministic` (the shared `demo`
run of tests/conftest.py, then once more here)."""

import os

import pytest

from common import contracts
from common.config import load_config
from tests.conftest import DEMO_OVERRIDES, IN_MEMORY_BEAM
from twotower.demo import run_demo


@pytest.fixture(scope="module")
def again(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp("demo-again"))
    config = load_config(overrides=DEMO_OVERRIDES)
    return work_dir, run_demo(
        config, work_dir, beam_args=IN_MEMORY_BEAM, verbose=0, log=lambda _: None
    )


def _shards(work_dir):
    dataset = os.path.join(work_dir, "dataset")
    names = sorted(n for n in os.listdir(dataset) if n.endswith(contracts.SHARD_SUFFIX))
    contents = {}
    for name in names:
        with open(os.path.join(dataset, name), "rb") as f:
            contents[name] = f.read()
    return contents


def test_the_dataset_is_the_same_byte_for_byte(demo, again):
    first, second = _shards(demo[0]), _shards(again[0])
    assert len(first) >= 2 and first == second


def test_the_metrics_and_retrievals_are_the_same(demo, again):
    (_, first), (_, second) = demo, again
    assert first["metrics"]["methods"] == second["metrics"]["methods"]
    assert first["metrics"]["methods"]["two_tower"]["hit_rate@100"] > 0.4
    assert first["top_items"] == second["top_items"]
