"""Simulated logs of a multi-stage recommender whose true preferences are known.

The world (users, items, clusters, true affinity, popularity prior, arrivals) is
described in `simulator.world`; each request goes through the legacy system of
`simulator.legacy_system` (a popularity-biased recall, a noisy ranker, position-biased
clicks), which is where the logs' bias comes from. Users make no request before their
arrival day.

Logged days run from `start_timestamp`; the last `eval_days` are the next (eval) period.
For `random_exposure_users` users, `random_exposure.jsonl` holds one eval-period request
that exposes `random_exposure_size` items drawn uniformly from the corpus, clicked with the
same sigmoid and no position effect; `true_top_k.jsonl` holds their top items by true
affinity over the whole corpus (training clicks not removed). `propensities.jsonl`
holds, for a sample of users, the true probabilities that the legacy system recalls an
item and exposes it once recalled (`simulator.propensities`).

Optional: with `content_dim > 0` every item row carries a content vector
(`simulator.content`); with `cold_item_fraction > 0` that share of items is never shown
before the eval period, their ids are listed in cold_items.txt and world.json counts them
(`cold_items`). With both at 0 (the defaults) neither appears, and every file but
world.json's config is the same bytes as before they existed.

Streaming: a day's requests are drawn for all users (a [num_users] vector), sorted by
timestamp and then recalled, ranked, clicked and written in chunks of REQUEST_CHUNK
requests, so memory is O(num_users + num_items + one chunk). Every chunk has its own
generator seeded from (seed, stream, day, chunk): the same seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator

import numpy as np
import tqdm

from common import contracts
from simulator.content import item_content_blocks
from simulator.legacy_system import LegacySystem, click_probability
from simulator.propensities import write_propensities
from simulator.world import (
    ACTIVITY_BANDS,
    AGE_BANDS,
    NUM_SEGMENTS,
    PRICE_BANDS,
    SCORE_BLOCK_FLOATS,
    STREAM_DAYS,
    STREAM_RANDOM_EXPOSURE,
    STREAM_REQUESTS,
    SimulatorConfig,
    World,
    affinity,
    build_world,
    cold_items,
    load_world,
    save_world,
    true_scores,
)

__all__ = ["SimulatorConfig", "World", "load_world", "simulate", "true_scores"]

REQUEST_CHUNK = 2048
SECONDS_PER_DAY = 86_400


def simulate(config: SimulatorConfig, output_dir: str, progress: bool = False) -> dict:
    """Builds a world and writes its logs, random-exposure test set and truth.

    Args:
      config: the world's size and behaviour (validated when it was made).
      output_dir: created if missing; receives requests.jsonl, items.jsonl, users.jsonl,
        random_exposure.jsonl, true_top_k.jsonl, propensities.jsonl, world.npz,
        world.json and, when config.cold_item_fraction > 0, cold_items.txt.
      progress: show tqdm progress bars.

    Returns:
      The summary also written to world.json: {"config", "eval_from", "end_timestamp",
      "counts"} and, when config.cold_item_fraction > 0, "cold_items" (their number).
    """
    os.makedirs(output_dir, exist_ok=True)
    world = build_world(config)
    save_world(world, os.path.join(output_dir, contracts.SIM_WORLD_ARRAYS))
    _write_lines(os.path.join(output_dir, contracts.SIM_USERS), _user_lines(world))
    _write_lines(os.path.join(output_dir, contracts.SIM_ITEMS), _item_lines(world))
    eval_from = config.start_timestamp + (config.days - config.eval_days) * SECONDS_PER_DAY
    end = config.start_timestamp + config.days * SECONDS_PER_DAY
    item_json = [f'"i{k}"' for k in range(config.num_items)]
    logged = _write_requests(world, output_dir, item_json, progress)
    random = _write_random_exposure(world, output_dir, item_json, eval_from, end, progress)
    propensities = write_propensities(
        world, LegacySystem(world), os.path.join(output_dir, contracts.SIM_PROPENSITIES)
    )
    summary = {
        "config": dataclasses.asdict(config),
        "eval_from": eval_from,
        "end_timestamp": end,
        "counts": {
            "users": config.num_users,
            "items": config.num_items,
            **logged,
            **random,
            "propensities": propensities,
        },
    }
    cold = cold_items(config)
    if config.cold_item_fraction > 0:
        _write_lines(
            os.path.join(output_dir, contracts.SIM_COLD_ITEMS), (f"i{k}\n" for k in cold.tolist())
        )
        summary["cold_items"] = int(cold.size)
    with open(os.path.join(output_dir, contracts.SIM_WORLD_SUMMARY), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def _id_list(item_json: list[str], items: list[int]) -> str:
    """A JSON list of item ids from a table of pre-quoted ids (json.dumps is ~5x slower)."""
    return f"[{', '.join([item_json[i] for i in items])}]"


def _write_lines(path: str, lines: Iterator[str]) -> None:
    with open(path, "w") as f:
        f.writelines(lines)


def _user_lines(world: World) -> Iterator[str]:
    for user, (segment, band) in enumerate(
        zip(world.user_segment, world.user_activity_band, strict=True)
    ):
        features = f'{{"segment": "s{segment}", "activity": "{ACTIVITY_BANDS[band]}"}}'
        yield f'{{"user_id": "u{user}", "features": {features}}}\n'


def _item_lines(world: World) -> Iterator[str]:
    rows = zip(world.item_cluster, world.item_price_band, world.item_age_band, strict=True)
    contents = _content_json(world)
    for item, (cluster, price, age) in enumerate(rows):
        features = f'"price_band": "{PRICE_BANDS[price]}", "age_band": "{AGE_BANDS[age]}"'
        if contents is not None:
            features += f', "content": {next(contents)}'
        yield f'{{"item_id": "i{item}", "cluster": "c{cluster}", "features": {{{features}}}}}\n'


def _content_json(world: World) -> Iterator[str] | None:
    """Each item's content vector as a JSON list, 4 decimals; None without content."""
    if world.config.content_dim == 0:
        return None
    return (
        json.dumps(row)
        for block in item_content_blocks(world)
        for row in np.round(block, 4).tolist()
    )


def _day_requests(world: World, day: int) -> tuple[np.ndarray, np.ndarray]:
    """The (users, timestamps) of one day's requests, sorted by timestamp."""
    config = world.config
    rng = np.random.default_rng([config.seed, STREAM_DAYS, day])
    per_user = rng.poisson(config.requests_per_user_per_day * world.user_activity)
    per_user[world.user_arrival_day > day] = 0  # not arrived yet
    users = np.repeat(np.arange(config.num_users), per_user)
    start = config.start_timestamp + day * SECONDS_PER_DAY
    stamps = start + rng.integers(0, SECONDS_PER_DAY, size=users.size)
    order = np.argsort(stamps, kind="stable")  # ties keep user order
    return users[order], stamps[order]


def _write_requests(world: World, output_dir: str, item_json: list[str], progress: bool) -> dict:
    """Writes requests.jsonl day by day, chunk by chunk; returns counts per period."""
    config = world.config
    legacy = LegacySystem(world)
    features = [
        f'{{"segment": "s{s}", "activity": "{a}"}}'
        for s in range(NUM_SEGMENTS)
        for a in ACTIVITY_BANDS
    ]
    feature_code = world.user_segment.astype(np.int64) * len(ACTIVITY_BANDS)
    feature_code += world.user_activity_band
    counts = {"train": [0, 0], "eval": [0, 0]}  # [requests, clicks]
    prior_sums = [0.0, 0.0]  # popularity prior summed over recalled, exposed items
    request_id = 0
    bar = tqdm.tqdm(total=0, desc="requests", unit="req", disable=not progress)
    with open(os.path.join(output_dir, contracts.SIM_REQUESTS), "w") as f:
        for day in range(config.days):
            users, stamps = _day_requests(world, day)
            period = counts["eval" if day >= config.days - config.eval_days else "train"]
            bar.total += users.size
            bar.refresh()
            for chunk, first in enumerate(range(0, users.size, REQUEST_CHUNK)):
                rng = np.random.default_rng([config.seed, STREAM_REQUESTS, day, chunk])
                chunk_users = users[first : first + REQUEST_CHUNK]
                recalled, exposed, clicked = legacy.serve(rng, chunk_users, day)
                lines = []
                for row, user in enumerate(chunk_users.tolist()):
                    exposed_row = exposed[row].tolist()
                    clicks = [exposed_row[j] for j in np.flatnonzero(clicked[row]).tolist()]
                    lines.append(
                        f'{{"request_id": "r{request_id}", "user_id": "u{user}", '
                        f'"timestamp": {stamps[first + row]}, '
                        f'"recalled": {_id_list(item_json, recalled[row].tolist())}, '
                        f'"exposed": {_id_list(item_json, exposed_row)}, '
                        f'"clicked": {_id_list(item_json, clicks)}, '
                        f'"user_features": {features[feature_code[user]]}}}\n'
                    )
                    request_id += 1
                f.writelines(lines)
                period[0] += chunk_users.size
                period[1] += int(clicked.sum())
                prior_sums[0] += float(world.popularity_prior[recalled].sum())
                prior_sums[1] += float(world.popularity_prior[exposed].sum())
                bar.update(chunk_users.size)
    bar.close()
    # Lift = mean prior of shown items / corpus mean prior (1 / num_items, the prior sums to 1).
    sizes = (config.recall_size, config.expose_size)
    lift = [
        total * config.num_items / (max(request_id, 1) * size)
        for total, size in zip(prior_sums, sizes, strict=True)
    ]
    return {
        "requests": {name: c[0] for name, c in counts.items()},
        "clicks": {name: c[1] for name, c in counts.items()},
        "mean_clicks_per_request": {n: round(c[1] / max(c[0], 1), 6) for n, c in counts.items()},
        "recalled_popularity_lift": round(lift[0], 6),
        "exposed_popularity_lift": round(lift[1], 6),
    }


def _write_random_exposure(
    world: World, output_dir: str, item_json: list[str], eval_from: int, end: int, progress: bool
) -> dict:
    """Writes random_exposure.jsonl and true_top_k.jsonl; returns their counts."""
    config = world.config
    rng = np.random.default_rng([config.seed, STREAM_RANDOM_EXPOSURE])
    users = np.sort(rng.choice(config.num_users, size=config.random_exposure_users, replace=False))
    stamps = rng.integers(eval_from, end, size=users.size)
    items_t = world.item_latents.T.astype(np.float64)
    block = max(1, SCORE_BLOCK_FLOATS // config.num_items)
    clicks_total, users_with_click = 0, 0
    exposure_path = os.path.join(output_dir, contracts.SIM_RANDOM_EXPOSURE)
    truth_path = os.path.join(output_dir, contracts.SIM_TRUE_TOP_K)
    bar = tqdm.tqdm(total=users.size, desc="random exposure", unit="user", disable=not progress)
    with open(exposure_path, "w") as exposure_file, open(truth_path, "w") as truth_file:
        for first in range(0, users.size, block):
            block_users = users[first : first + block]
            scores = affinity(world, block_users, items_t)  # [block, num_items]
            for row, user in enumerate(block_users.tolist()):
                exposed = rng.choice(
                    config.num_items, size=config.random_exposure_size, replace=False
                )
                clicked = rng.random(exposed.size) < click_probability(scores[row, exposed])
                clicks = exposed[clicked].tolist()
                clicks_total += len(clicks)
                users_with_click += bool(clicks)
                exposure_file.write(
                    f'{{"user_id": "u{user}", "timestamp": {stamps[first + row]}, '
                    f'"exposed": {_id_list(item_json, exposed.tolist())}, '
                    f'"clicked": {_id_list(item_json, clicks)}}}\n'
                )
            for row, user in enumerate(block_users.tolist()):
                top = _top_k(scores[row], config.true_top_k)
                items = _id_list(item_json, top.tolist())
                truth_file.write(f'{{"user_id": "u{user}", "items": {items}}}\n')
            bar.update(block_users.size)
    bar.close()
    exposed_total = users.size * config.random_exposure_size
    return {
        "random_exposure": {
            "users": int(users.size),
            "exposed": exposed_total,
            "clicks": clicks_total,
            "click_rate": round(clicks_total / max(exposed_total, 1), 6),
            "users_with_click": round(users_with_click / max(users.size, 1), 6),
        }
    }


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first; ties go to the lower index."""
    candidates = np.argpartition(-scores, k - 1)[:k]
    return candidates[np.lexsort((candidates, -scores[candidates]))]
