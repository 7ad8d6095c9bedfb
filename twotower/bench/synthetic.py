"""Synthetic request logs of any size, for benchmarks (written in constant memory).

Each request recalls `recall_size` distinct items (an arithmetic progression modulo the
catalog size with a step coprime to it), exposes the first `expose_size` and clicks each
exposed item with probability `click_rate`; users and timestamps are uniform. Requests
are generated in chunks of CHUNK rows from a generator seeded by (seed, chunk), so the
same arguments write the same bytes.
"""

import math
import os

import numpy as np

REQUESTS_FILE = "requests.jsonl"
CATALOG_FILE = "items.jsonl"
CHUNK = 10_000
START_TIMESTAMP = 1_700_000_000
DAYS = 30


def _steps(num_items: int) -> np.ndarray:
    return np.array([s for s in range(1, min(num_items, 5000)) if math.gcd(s, num_items) == 1])


def write_synthetic_logs(
    output_dir: str,
    num_requests: int,
    *,
    num_items: int = 20_000,
    requests_per_user: int = 20,
    recall_size: int = 50,
    expose_size: int = 10,
    click_rate: float = 0.1,
    seed: int = 0,
    catalog_size: int = 0,
    brands: int = 0,
) -> dict[str, str]:
    """Writes `requests.jsonl` and `items.jsonl` into `output_dir`.

    The requests use items 0 … num_items - 1; the catalog lists `catalog_size` items
    (at least those), so the same clicks can be trained with catalogs of any size. Every
    item has a cluster of 50 and a "band" feature of 7 values; with `brands` > 0 also a
    "brand" feature of that many values (item i: brand i mod `brands`), so the same
    clicks can be trained with an item feature of any vocabulary.

    Returns:
      {"requests": path, "catalog": path}.
    """
    os.makedirs(output_dir, exist_ok=True)
    item_json = [f'"i{i}"' for i in range(num_items)]
    catalog_path = os.path.join(output_dir, CATALOG_FILE)
    with open(catalog_path, "w") as f:
        f.writelines(
            f'{{"item_id": "i{i}", "cluster": "c{i % 50}", "features": {{"band": "b{i % 7}"'
            + (f', "brand": "r{i % brands}"' if brands else "")
            + "}}\n"
            for i in range(max(num_items, catalog_size))
        )
    num_users = max(num_requests // requests_per_user, 1)
    steps = _steps(num_items)
    positions = np.arange(recall_size)
    requests_path = os.path.join(output_dir, REQUESTS_FILE)
    with open(requests_path, "w") as f:
        for chunk, first in enumerate(range(0, num_requests, CHUNK)):
            rng = np.random.default_rng([seed, chunk])
            n = min(CHUNK, num_requests - first)
            users = rng.integers(num_users, size=n)
            stamps = START_TIMESTAMP + rng.integers(DAYS * 86_400, size=n)
            base = rng.integers(num_items, size=(n, 1))
            step = steps[rng.integers(steps.size, size=(n, 1))]
            recalled = (base + positions * step) % num_items
            clicked = rng.random((n, expose_size)) < click_rate
            lines = []
            for row in range(n):
                ids = [item_json[i] for i in recalled[row].tolist()]
                clicks = [ids[j] for j in np.flatnonzero(clicked[row]).tolist()]
                user = int(users[row])
                lines.append(
                    f'{{"request_id": "r{first + row}", "user_id": "u{user}", '
                    f'"timestamp": {int(stamps[row])}, "recalled": [{", ".join(ids)}], '
                    f'"exposed": [{", ".join(ids[:expose_size])}], '
                    f'"clicked": [{", ".join(clicks)}], '
                    f'"user_features": {{"segment": "s{user % 8}"}}}}\n'
                )
            f.writelines(lines)
    return {"requests": requests_path, "catalog": catalog_path}
