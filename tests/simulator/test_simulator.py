"""Tests for simulator.simulate: small worlds, fixed seeds, numbers asserted."""

import dataclasses
import json
import os

import numpy as np
import pytest

from common.settings import ConfigError
from simulator.simulate import (
    SimulatorConfig,
    click_probability,
    load_world,
    simulate,
    true_scores,
)
from simulator.world import build_world
from trainer import metrics

FILES = (
    "requests.jsonl",
    "items.jsonl",
    "users.jsonl",
    "random_exposure.jsonl",
    "true_top_k.jsonl",
    "world.npz",
    "world.json",
)
TINY = SimulatorConfig(
    num_users=100,
    num_items=300,
    num_clusters=6,
    days=3,
    eval_days=1,
    recall_size=40,
    random_exposure_users=20,
    random_exposure_size=30,
    true_top_k=30,
)


def _read(directory: str, name: str) -> list[dict]:
    with open(os.path.join(directory, name)) as f:
        return [json.loads(line) for line in f]


def _index(item_or_user_id: str) -> int:
    return int(item_or_user_id[1:])


@pytest.fixture(scope="module")
def default_world(tmp_path_factory) -> tuple[str, dict]:
    """The default config (1000 users, 2000 items, ~10k requests), simulated once."""
    directory = str(tmp_path_factory.mktemp("default_world"))
    return directory, simulate(SimulatorConfig(), directory)


def test_same_seed_gives_same_bytes(tmp_path):
    simulate(TINY, str(tmp_path / "a"), progress=True)
    simulate(TINY, str(tmp_path / "b"))
    simulate(dataclasses.replace(TINY, seed=1), str(tmp_path / "c"))
    for name in FILES:
        first = (tmp_path / "a" / name).read_bytes()
        assert first == (tmp_path / "b" / name).read_bytes(), name
    requests = (tmp_path / "a" / "requests.jsonl").read_bytes()
    assert requests != (tmp_path / "c" / "requests.jsonl").read_bytes()


def test_request_lines_keep_invariants(default_world):
    directory, summary = default_world
    config = SimulatorConfig()
    requests = _read(directory, "requests.jsonl")
    assert len(requests) == sum(summary["counts"]["requests"].values())
    end = config.start_timestamp + config.days * 86_400
    previous = config.start_timestamp
    for number, request in enumerate(requests):
        recalled, exposed = request["recalled"], request["exposed"]
        assert request["request_id"] == f"r{number}"
        assert previous <= request["timestamp"] < end  # sorted by timestamp
        previous = request["timestamp"]
        assert len(set(recalled)) == len(recalled) == config.recall_size
        assert len(set(exposed)) == len(exposed) == config.expose_size
        assert set(request["clicked"]) <= set(exposed) <= set(recalled)
        # clicked keeps the exposed (ranked) order
        assert request["clicked"] == [i for i in exposed if i in set(request["clicked"])]
        assert set(request["user_features"]) == {"segment", "activity"}
        assert 0 <= _index(request["user_id"]) < config.num_users
    users = _read(directory, "users.jsonl")
    assert [u["user_id"] for u in users] == [f"u{k}" for k in range(config.num_users)]
    assert {u["features"]["activity"] for u in users} == {"low", "mid", "high"}
    for request in requests[:50]:
        assert request["user_features"] == users[_index(request["user_id"])]["features"]


def test_clicks_calibrated_and_position_biased(default_world):
    directory, summary = default_world
    counts = summary["counts"]
    # 1.23 clicks per logged request, 7.4% of random exposures clicked, 97.7% of users.
    assert 0.5 <= counts["mean_clicks_per_request"]["train"] <= 2.0
    assert 0.03 <= counts["random_exposure"]["click_rate"] <= 0.15
    assert counts["random_exposure"]["users_with_click"] >= 0.9
    world = load_world(directory)
    clicks, expected = np.zeros(10), np.zeros(10)
    for request in _read(directory, "requests.jsonl"):
        user = _index(request["user_id"])
        exposed = [_index(i) for i in request["exposed"]]
        affinity = world.item_latents[exposed] @ world.user_latents[user]
        expected += click_probability(affinity + world.item_quality[exposed])
        for item in request["clicked"]:
            clicks[request["exposed"].index(item)] += 1
    # Clicks over the no-position click probability recover 1/sqrt(1 + position):
    # 1.0 at the top slot, 1/sqrt(10) = 0.316 at the last.
    np.testing.assert_allclose(clicks / expected, 1 / np.sqrt(1 + np.arange(10)), rtol=0.1)


def test_recall_is_biased_toward_popular_items(default_world):
    directory, summary = default_world
    prior = load_world(directory).popularity_prior
    recalled = [_index(i) for r in _read(directory, "requests.jsonl") for i in r["recalled"]]
    lift = prior[recalled].mean() / prior.mean()
    # Recalled items carry 12x the corpus-mean prior, exposed ones far more.
    assert lift > 8
    assert lift == pytest.approx(summary["counts"]["recalled_popularity_lift"], rel=1e-5)
    assert summary["counts"]["exposed_popularity_lift"] > lift


def test_eval_from_splits_the_periods(default_world):
    directory, summary = default_world
    config = SimulatorConfig()
    eval_from = summary["eval_from"]
    assert eval_from == config.start_timestamp + (config.days - config.eval_days) * 86_400
    stamps = np.array([r["timestamp"] for r in _read(directory, "requests.jsonl")])
    assert (stamps >= eval_from).sum() == summary["counts"]["requests"]["eval"] > 0
    assert (stamps < eval_from).sum() == summary["counts"]["requests"]["train"] > 0
    exposures = _read(directory, "random_exposure.jsonl")
    assert len(exposures) == config.random_exposure_users
    for line in exposures:
        assert eval_from <= line["timestamp"] < summary["end_timestamp"]
        assert len(set(line["exposed"])) == config.random_exposure_size
        assert set(line["clicked"]) <= set(line["exposed"])
    with open(os.path.join(directory, "world.json")) as f:
        assert json.load(f) == summary


def test_true_scores_agree_with_true_top_k(default_world):
    directory, _ = default_world
    world = load_world(directory)
    truth = _read(directory, "true_top_k.jsonl")
    scores = true_scores(world, [t["user_id"] for t in truth])
    assert scores.shape == (len(truth), world.config.num_items)
    for row, line in enumerate(truth):
        listed = np.array([_index(i) for i in line["items"]])
        assert listed.size == world.config.true_top_k
        assert np.all(np.diff(scores[row, listed]) <= 1e-12)  # best first
        rest = np.setdiff1d(np.arange(world.config.num_items), listed)
        assert scores[row, listed].min() >= scores[row, rest].max() - 1e-12
    with pytest.raises(ValueError, match="user_ids"):
        true_scores(world, ["u0", "u99999"])


def test_load_world_round_trips(tmp_path):
    simulate(TINY, str(tmp_path))
    loaded, built = load_world(str(tmp_path)), build_world(TINY)
    assert loaded.config == TINY
    for field in dataclasses.fields(built):
        if field.name != "config":
            np.testing.assert_array_equal(getattr(loaded, field.name), getattr(built, field.name))


def test_features_follow_the_latents(default_world):
    directory, _ = default_world
    world = load_world(directory)
    items = _read(directory, "items.jsonl")
    assert [i["item_id"] for i in items] == [f"i{k}" for k in range(world.config.num_items)]
    assert {i["cluster"] for i in items} == {f"c{k}" for k in range(world.config.num_clusters)}
    age = np.array([i["features"]["age_band"] for i in items])
    # Older items are the popular ones: mean prior of "old" > 3x that of "new".
    prior = world.popularity_prior
    assert prior[age == "old"].mean() > 3 * prior[age == "new"].mean()


def test_recall_falls_back_when_draws_run_short(tmp_path):
    # Recall every item of a steep corpus: tail items (p ~ 30^-4) are almost never drawn,
    # so rows complete through the exact fallback; each row is a permutation of the corpus.
    config = dataclasses.replace(
        TINY, num_items=30, num_clusters=3, recall_size=30, popularity_skew=4.0, days=2
    )
    config = dataclasses.replace(config, random_exposure_size=10, true_top_k=10)
    simulate(config, str(tmp_path))
    for request in _read(str(tmp_path), "requests.jsonl"):
        assert sorted(map(_index, request["recalled"])) == list(range(30))


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_users", 0),
        ("num_items", 1.5),
        ("eval_days", 10),
        ("expose_size", 101),
        ("recall_size", 5000),
        ("requests_per_user_per_day", 0.0),
        ("popularity_skew", -1.0),
        ("random_exposure_users", 1001),
        ("seed", -1),
        ("num_clusters", True),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        dataclasses.replace(SimulatorConfig(), **{field: value})


def _logged_clicks(directory: str, eval_from: int, num_items: int):
    """Training click counts per item, training and eval click sets per user."""
    popularity = np.zeros(num_items)
    train: dict[int, set[int]] = {}
    test: dict[int, set[int]] = {}
    for request in _read(directory, "requests.jsonl"):
        clicks = [_index(i) for i in request["clicked"]]
        user = _index(request["user_id"])
        if request["timestamp"] < eval_from:
            np.add.at(popularity, clicks, 1)
            train.setdefault(user, set()).update(clicks)
        else:
            test.setdefault(user, set()).update(clicks)
    return popularity, train, test


def _rank(scores: np.ndarray, excluded: list[set[int]], k: int) -> np.ndarray:
    """Top k per row, best first, never an excluded (training-clicked) item."""
    scores = scores.copy()
    for row, items in enumerate(excluded):
        scores[row, list(items)] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_oracle_beats_most_popular_only_on_unbiased_data(default_world):
    directory, summary = default_world
    world = load_world(directory)
    num_items = world.config.num_items
    popularity, train, test = _logged_clicks(directory, summary["eval_from"], num_items)
    # Ties in click counts break toward the lower index, as a stable sort does.
    most_popular = popularity - np.arange(num_items) * 1e-9
    random_lines = _read(directory, "random_exposure.jsonl")
    truth = np.array(
        [[_index(i) for i in t["items"]] for t in _read(directory, "true_top_k.jsonl")]
    )
    results = {}
    for data, users, relevant_of in (
        ("logged", sorted(test), lambda u: test[u]),
        ("random", [_index(r["user_id"]) for r in random_lines], None),
    ):
        if relevant_of is None:
            clicked = {
                _index(r["user_id"]): {_index(i) for i in r["clicked"]} for r in random_lines
            }
            relevant_of = clicked.__getitem__
        excluded = [train.get(u, set()) for u in users]
        relevant = [relevant_of(u) - e for u, e in zip(users, excluded, strict=True)]
        oracle = true_scores(world, [f"u{u}" for u in users])
        noise = np.random.default_rng(0).standard_normal(oracle.shape)
        scorers = {
            "oracle": oracle,
            "noisy_oracle": oracle + noise,
            "most_popular": np.tile(most_popular, (len(users), 1)),
            "random": np.random.default_rng(1).random(oracle.shape),
        }
        for name, scores in scorers.items():
            ranked = _rank(scores, excluded, 50)
            result = metrics.evaluate_rankings(ranked, relevant, [10, 50])
            if data == "random":
                result["true_top_k_overlap@50"] = metrics.true_top_k_overlap(ranked, truth, 50)
            results[data, name] = result

    def score(data, name, metric):
        return results[data, name][metric]

    # Logged next-period clicks reward the legacy system's bias: most-popular recall@10
    # 0.326 beats the oracle's 0.122.
    assert score("logged", "most_popular", "recall@10") > 2 * score("logged", "oracle", "recall@10")
    assert score("logged", "most_popular", "recall@10") > 0.25
    # On random exposure the order flips: oracle recall@50 0.215 vs most-popular 0.029,
    # close to a random ranking's 0.019.
    assert score("random", "oracle", "recall@50") > 5 * score("random", "most_popular", "recall@50")
    assert score("random", "most_popular", "recall@50") < 2 * score("random", "random", "recall@50")
    # The oracle is the best any ranking can do in expectation: it tops every other scorer.
    for name in ("noisy_oracle", "most_popular", "random"):
        for metric in ("recall@10", "recall@50", "ndcg@50", "hit_rate@50"):
            assert score("random", "oracle", metric) >= score("random", name, metric), (
                name,
                metric,
            )
    # True top-k: the oracle only misses the training clicks it must exclude (0.944);
    # most-popular shares almost nothing with the truth (0.022).
    assert score("random", "oracle", "true_top_k_overlap@50") > 0.9
    assert score("random", "most_popular", "true_top_k_overlap@50") < 0.05
