"""True propensities of the legacy system, for checking what a trainer estimates.

UMA²'s propensity heads estimate p1 = P(recalled | user, item) and p2 = P(exposed |
recalled, user, item). The simulator knows the system that made the logs, so it measures
both by Monte Carlo: for `propensity_users` users (drawn among those who have arrived),
it plays `propensity_requests` requests each through the legacy system on the last
training day and counts, per item, how often it was recalled and how often it was
exposed once recalled. `propensities.jsonl` holds one line per user:

  {"user_id", "requests", "items": [...], "p_recall": [...], "p_expose": [...]}

for ITEMS_PER_USER items drawn uniformly from the catalog (p_expose is the exposed share
of the item's recalls, null when it was never recalled).
"""

import json

import numpy as np

from simulator.legacy_system import LegacySystem
from simulator.world import STREAM_PROPENSITIES, World

_CHUNK = 2048
ITEMS_PER_USER = 200


def measure(world: World, legacy: LegacySystem, user: int, requests: int, day: int) -> tuple:
    """(recalled counts, exposed counts), `[num_items]` each, over `requests` requests."""
    config = world.config
    recalled_counts = np.zeros(config.num_items, np.int64)
    exposed_counts = np.zeros(config.num_items, np.int64)
    rng = np.random.default_rng([config.seed, STREAM_PROPENSITIES, user])
    for first in range(0, requests, _CHUNK):
        users = np.full(min(_CHUNK, requests - first), user)
        recalled, exposed, _ = legacy.serve(rng, users, day)
        np.add.at(recalled_counts, recalled.ravel(), 1)
        np.add.at(exposed_counts, exposed.ravel(), 1)
    return recalled_counts, exposed_counts


def write_propensities(world: World, legacy: LegacySystem, path: str) -> dict:
    """Writes propensities.jsonl (see the module docstring); returns its counts."""
    config = world.config
    day = config.days - config.eval_days - 1
    rng = np.random.default_rng([config.seed, STREAM_PROPENSITIES])
    arrived = np.flatnonzero(world.user_arrival_day <= day)
    users = np.sort(
        rng.choice(arrived, size=min(config.propensity_users, arrived.size), replace=False)
    )
    pairs = 0
    with open(path, "w") as f:
        for user in users.tolist():
            recalled, exposed = measure(world, legacy, user, config.propensity_requests, day)
            size = min(ITEMS_PER_USER, config.num_items)
            items = np.sort(rng.choice(config.num_items, size=size, replace=False))
            p_recall = recalled[items] / config.propensity_requests
            p_expose = [
                round(float(e / r), 6) if r else None
                for e, r in zip(exposed[items], recalled[items], strict=True)
            ]
            row = {
                "user_id": f"u{user}",
                "requests": config.propensity_requests,
                "items": [f"i{i}" for i in items.tolist()],
                "p_recall": np.round(p_recall, 6).tolist(),
                "p_expose": p_expose,
            }
            f.write(json.dumps(row) + "\n")
            pairs += items.size
    return {"users": int(users.size), "pairs": int(pairs)}
