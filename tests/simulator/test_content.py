"""Tests for the simulator's item content vectors and cold items: tiny worlds, fixed seeds."""

import dataclasses
import json
import os

import numpy as np
import pytest

from common import contracts
from common.settings import ConfigError
from simulator.config import SimulatorConfig, cold_item_count
from simulator.content import item_content
from simulator.simulate import load_world, simulate
from simulator.world import build_world, cold_items

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
    propensity_users=10,
    propensity_requests=50,
)
# Content similarity is measured on 600 items (the default geometry otherwise).
CONTENT_WORLD = SimulatorConfig(
    num_users=10, num_items=600, random_exposure_users=10, content_dim=16
)


def _read(directory: str, name: str) -> list[dict]:
    with open(os.path.join(directory, name)) as f:
        return [json.loads(line) for line in f]


def _index(item_id: str) -> int:
    return int(item_id[1:])


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _similarity_correlation(content_noise: float) -> float:
    """Pearson r of content cosine vs true-latent cosine over 5,000 random item pairs."""
    world = build_world(dataclasses.replace(CONTENT_WORLD, content_noise=content_noise))
    content = item_content(world)
    first, second = np.random.default_rng(0).integers(0, 600, size=(2, 5000))
    pairs = first != second
    first, second = first[pairs], second[pairs]
    latents = world.item_latents.astype(np.float64)
    true = _cosine(latents[first], latents[second])
    return float(np.corrcoef(true, _cosine(content[first], content[second]))[0, 1])


def test_defaults_add_no_content_and_no_cold_items(tmp_path):
    summary = simulate(TINY, str(tmp_path))
    assert (TINY.content_dim, TINY.cold_item_fraction) == (0, 0.0)
    rows = _read(str(tmp_path), contracts.SIM_ITEMS)
    assert len(rows) == 300
    assert all(set(row["features"]) == {"price_band", "age_band"} for row in rows)
    with open(tmp_path / contracts.SIM_WORLD_SUMMARY) as f:
        assert "cold_items" not in json.load(f)
    assert "cold_items" not in summary
    assert not (tmp_path / contracts.SIM_COLD_ITEMS).exists()
    assert (load_world(str(tmp_path)).item_arrival_day == 0).all()


def test_content_rows_hold_the_rounded_vectors(tmp_path):
    config = dataclasses.replace(TINY, content_dim=8)
    simulate(config, str(tmp_path))
    rows = _read(str(tmp_path), contracts.SIM_ITEMS)
    content = np.array([row["features"]["content"] for row in rows])
    assert content.shape == (300, 8)
    # Written rounded to 4 decimals: the world's vectors, to within half a unit of 1e-4.
    np.testing.assert_allclose(content, item_content(load_world(str(tmp_path))), atol=5.1e-5)
    np.testing.assert_array_equal(content, np.round(content, 4))
    # The other features are those of the world without content.
    simulate(TINY, str(tmp_path / "plain"))
    plain = _read(str(tmp_path / "plain"), contracts.SIM_ITEMS)
    for row, plain_row in zip(rows, plain, strict=True):
        del row["features"]["content"]
        assert row == plain_row


def test_content_is_deterministic_for_a_seed(tmp_path):
    config = dataclasses.replace(TINY, content_dim=4)
    simulate(config, str(tmp_path / "a"))
    simulate(config, str(tmp_path / "b"))
    simulate(dataclasses.replace(config, seed=1), str(tmp_path / "c"))
    items = [(tmp_path / n / contracts.SIM_ITEMS).read_bytes() for n in ("a", "b", "c")]
    assert items[0] == items[1]
    assert items[0] != items[2]
    # Adding content leaves the logs alone (its generator is a stream of its own).
    simulate(TINY, str(tmp_path / "plain"))
    for name in (contracts.SIM_REQUESTS, contracts.SIM_RANDOM_EXPOSURE, contracts.SIM_WORLD_ARRAYS):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()


def test_content_noise_is_relative_to_the_signal():
    noiseless = item_content(build_world(dataclasses.replace(CONTENT_WORLD, content_noise=0.0)))
    noisy = item_content(build_world(CONTENT_WORLD))  # content_noise 1.0
    # The signal is scaled to RMS 1 per coordinate, exactly.
    assert np.sqrt((noiseless**2).mean()) == pytest.approx(1.0, abs=1e-9)
    # Noise of std 1 on 600 x 16 coordinates: RMS sqrt(1 + 1), within sampling error.
    assert np.sqrt((noisy**2).mean()) == pytest.approx(np.sqrt(2.0), rel=0.03)
    assert np.std(noisy - noiseless) == pytest.approx(1.0, rel=0.03)


def test_content_similarity_tracks_true_similarity_imperfectly():
    correlation = {noise: _similarity_correlation(noise) for noise in (0.5, 1.0, 2.0)}
    # Measured on this world: 0.728, 0.553, 0.258 (docs/simulator.md has the 2,000-item
    # table); informative at noise 1, not a copy, and less so as the noise grows.
    assert 0.5 < correlation[1.0] < 0.6
    assert correlation[0.5] > correlation[1.0] + 0.1 > correlation[2.0] + 0.2
    assert correlation[2.0] > 0.15


def test_cold_items_are_never_shown_before_the_eval_period(tmp_path):
    config = dataclasses.replace(TINY, cold_item_fraction=0.2)
    summary = simulate(config, str(tmp_path))
    with open(tmp_path / contracts.SIM_COLD_ITEMS) as f:
        listed = [line.strip() for line in f]
    cold = set(listed)
    # 0.2 * 300 = 60 items, listed in id order, the same as the world's.
    assert len(cold) == len(listed) == summary["cold_items"] == 60
    assert [_index(i) for i in listed] == cold_items(config).tolist()
    with open(tmp_path / contracts.SIM_WORLD_SUMMARY) as f:
        assert json.load(f)["cold_items"] == 60
    world = load_world(str(tmp_path))
    assert set(np.flatnonzero(world.item_arrival_day == 2).tolist()) == {_index(i) for i in cold}

    shown_after = {"recalled": set(), "exposed": set(), "clicked": set()}
    requests_before = 0
    for request in _read(str(tmp_path), contracts.SIM_REQUESTS):
        if request["timestamp"] < summary["eval_from"]:
            requests_before += 1
            for key in shown_after:
                assert not cold & set(request[key]), (request["request_id"], key)
        else:
            for key, seen in shown_after.items():
                seen.update(cold & set(request[key]))
    assert requests_before == summary["counts"]["requests"]["train"] > 100
    # From the first eval day on they are ordinary items: over its 91 requests 59 of the
    # 60 are recalled, 13 exposed, 5 clicked.
    assert [len(shown_after[k]) for k in ("recalled", "exposed", "clicked")] == [59, 13, 5]

    # They stay in the unbiased test set and in the oracle's top-K.
    random_rows = _read(str(tmp_path), contracts.SIM_RANDOM_EXPOSURE)
    exposed = {i for row in random_rows for i in row["exposed"]}
    assert len(cold & exposed) == 56
    truth = {i for row in _read(str(tmp_path), contracts.SIM_TRUE_TOP_K) for i in row["items"]}
    assert len(cold & truth) == 33
    # Their true recall propensity on the last training day is 0.
    for row in _read(str(tmp_path), contracts.SIM_PROPENSITIES):
        for item, p_recall in zip(row["items"], row["p_recall"], strict=True):
            assert item not in cold or p_recall == 0.0, (row["user_id"], item)


def test_cold_items_are_deterministic_and_keep_later_arrivals():
    config = dataclasses.replace(TINY, cold_item_fraction=0.1, late_item_share=0.5, days=6)
    cold = cold_items(config)
    assert cold.size == cold_item_count(config) == 30
    np.testing.assert_array_equal(cold, cold_items(dataclasses.replace(config, content_dim=3)))
    assert not np.array_equal(cold, cold_items(dataclasses.replace(config, seed=1)))
    arrival = build_world(config).item_arrival_day
    late = build_world(dataclasses.replace(config, cold_item_fraction=0.0)).item_arrival_day
    # Late items arrive on days 3..5; cold ones on day 5 (the eval day) unless later.
    np.testing.assert_array_equal(arrival[cold], np.maximum(late[cold], 5))
    warm = np.setdiff1d(np.arange(300), cold)
    np.testing.assert_array_equal(arrival[warm], late[warm])


def test_tiny_shares_round_to_at_least_one_cold_item():
    assert cold_item_count(dataclasses.replace(TINY, cold_item_fraction=0.001)) == 1
    assert cold_item_count(dataclasses.replace(TINY, cold_item_fraction=0.005)) == 2  # 1.5


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("cold_item_fraction", 0.9, "leaves 30 items before the eval period"),
        ("cold_item_fraction", 1.5, ""),
        ("content_dim", -1, ""),
        ("content_noise", -0.1, ""),
    ],
)
def test_invalid_content_and_cold_settings_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=f"^{field}: .*{message}"):
        dataclasses.replace(TINY, **{field: value})


def test_a_world_without_content_refuses_to_make_it():
    with pytest.raises(ValueError, match="content_dim is 0"):
        item_content(build_world(TINY))
