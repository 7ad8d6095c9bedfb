"""The simulator's knobs and presets: each changes what it says, and the true
propensities it writes agree with the system that wrote the logs."""

import json
import os

import numpy as np
import pytest

from common.settings import ConfigError
from simulator.config import PRESETS, SimulatorConfig, preset
from simulator.legacy_system import click_probability
from simulator.simulate import simulate
from simulator.world import load_world

SMALL = {
    "num_users": 300,
    "num_items": 600,
    "num_clusters": 8,
    "days": 6,
    "eval_days": 1,
    "random_exposure_users": 50,
    "propensity_users": 20,
}


def _requests(directory):
    with open(os.path.join(directory, "requests.jsonl")) as f:
        return [json.loads(line) for line in f]


def _index(identifier):
    return int(identifier[1:])


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Every preset at a small size: {name: (folder, summary)}."""
    worlds = {}
    for name in PRESETS:
        folder = str(tmp_path_factory.mktemp(name))
        worlds[name] = folder, simulate(preset(name, **SMALL), folder)
    return worlds


def test_presets_are_named_and_unknown_ones_refused():
    assert len(PRESETS) >= 4 and "default" in PRESETS
    assert preset("default") == SimulatorConfig()
    with pytest.raises(ConfigError, match="^preset: 'nope' is not one of default, "):
        preset("nope")


def test_the_presets_bias_the_logs_as_documented(family):
    counts = {name: summary["counts"] for name, (_, summary) in family.items()}
    lift = {name: c["exposed_popularity_lift"] for name, c in counts.items()}
    clicks = {name: c["mean_clicks_per_request"]["train"] for name, c in counts.items()}
    # The popularity trap shows the most popular items; a good ranker the least.
    assert lift["popularity-trap"] > lift["default"] > lift["good-ranker"]
    # A good ranker shows what users like: far more clicks per request.
    assert clicks["good-ranker"] > 2 * clicks["default"] > 2 * clicks["popularity-trap"]


def test_position_bias_is_the_configured_power(family):
    directory, _ = family["spread-tastes"]  # position_bias 1.0, 5 items exposed
    world = load_world(directory)
    clicks, expected = np.zeros(5), np.zeros(5)
    for request in _requests(directory):
        exposed = [_index(i) for i in request["exposed"]]
        affinity = world.item_latents[exposed] @ world.user_latents[_index(request["user_id"])]
        expected += click_probability(affinity + world.item_quality[exposed])
        for item in request["clicked"]:
            clicks[request["exposed"].index(item)] += 1
    # 1 / (1 + p): 1, 1/2, 1/3, 1/4, 1/5
    np.testing.assert_allclose(clicks / expected, 1 / (1 + np.arange(5)), rtol=0.15)


def test_late_items_and_users_appear_only_after_they_arrive(family):
    directory, summary = family["growing-catalog"]
    world = load_world(directory)
    config = world.config
    late_items = np.flatnonzero(world.item_arrival_day > 0)
    late_users = np.flatnonzero(world.user_arrival_day > 0)
    # 20% of each (binomial: within 3 standard deviations), arriving in the second half
    # of the 6 days (days 3, 4, 5).
    for late, count in ((late_items, config.num_items), (late_users, config.num_users)):
        assert late.size == pytest.approx(0.2 * count, abs=3 * np.sqrt(count * 0.2 * 0.8))
    assert set(world.item_arrival_day[late_items]) <= {3, 4, 5}
    seen_late = set()
    for request in _requests(directory):
        day = (request["timestamp"] - config.start_timestamp) // 86_400
        assert world.user_arrival_day[_index(request["user_id"])] <= day
        recalled = np.array([_index(i) for i in request["recalled"]])
        assert (world.item_arrival_day[recalled] <= day).all()
        seen_late.update(recalled[world.item_arrival_day[recalled] > 0].tolist())
    assert len(seen_late) > late_items.size // 2  # they do show up once they arrive


def test_true_propensities_match_the_system_that_logged(family):
    directory, summary = family["default"]
    world = load_world(directory)
    with open(os.path.join(directory, "propensities.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert summary["counts"]["propensities"] == {"users": 20, "pairs": 20 * 200}
    p_recall = np.concatenate([row["p_recall"] for row in rows])
    items = np.concatenate([[_index(i) for i in row["items"]] for row in rows])
    # Every request recalls exactly recall_size of num_items items, so over items drawn
    # uniformly the mean P(recalled) is recall_size / num_items = 100 / 600.
    assert p_recall.mean() == pytest.approx(100 / 600, rel=0.05)
    # Recall follows popularity: rank-correlated with the prior.
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    prior = world.popularity_prior[items]
    assert np.corrcoef(ranks(p_recall), ranks(prior))[0, 1] > 0.7
    p_expose = [e for row in rows for e in row["p_expose"] if e is not None]
    assert all(0 <= e <= 1 for e in p_expose)
