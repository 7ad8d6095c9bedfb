"""The simulator's ground truth: users, items, clusters, quality and popularity.

Geometry (the knobs are `SimulatorConfig` fields, the rest constants, so a config and
its seed alone fix the world):
- `num_clusters` unit-norm centroids in `dim` dimensions. Cluster sizes follow a
  Dirichlet(5) share, and every cluster holds at least one item.
- Item latent = its cluster's centroid + N(0, item_noise^2 / dim) per coordinate.
  Item quality ~ N(0, QUALITY_STD^2).
- A user likes 1..favourite_clusters clusters with Dirichlet(1) weights; the latent is
  USER_NORM times the normalised weighted sum of those centroids + N(0, user_noise^2 / dim).
- True affinity = dot(user, item) + item quality.
- Popularity prior: Zipf, p ∝ rank^-popularity_skew, where the rank sorts a key that is
  correlated only popularity_quality_correlation with quality. Popularity is therefore
  mostly luck, and the gap between it and affinity is the bias a trainer must undo.
- Request rate: lognormal with sigma activity_skew and mean 1.
- Arrival: a late_item_share of items and a late_user_share of users arrive on a day
  drawn uniformly from the second half of the logs (drawn from a stream of their own, so
  a world without late arrivals is the same as before they existed). Cold items, a
  cold_item_fraction of the catalog drawn from a stream of their own, arrive on the
  first day of the eval period if they would arrive earlier.
- Features: user segment from the dominant cluster, activity band from the request-rate
  multiplier; item price band from a latent direction, age band from popularity + noise.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import zipfile
from collections.abc import Sequence

import numpy as np

from common import contracts
from simulator.config import SimulatorConfig, cold_item_count

USER_NORM = 2.0
QUALITY_STD = 0.3
NUM_SEGMENTS = 8
ACTIVITY_BANDS = ("low", "mid", "high")
PRICE_BANDS = ("p0", "p1", "p2", "p3")
AGE_BANDS = ("new", "mid", "old")
# Users scored per block in `true_scores` callers: bounds a block to ~4M floats.
SCORE_BLOCK_FLOATS = 1 << 22
# Seed streams, so each stage draws from its own generator whatever the others do.
STREAM_WORLD, STREAM_DAYS, STREAM_REQUESTS, STREAM_RANDOM_EXPOSURE = 1, 2, 3, 4
STREAM_ARRIVALS, STREAM_PROPENSITIES, STREAM_COLD, STREAM_CONTENT = 5, 6, 7, 8

_ARRAYS = (
    "user_latents",
    "item_latents",
    "item_quality",
    "popularity_prior",
    "item_cluster",
    "user_clusters",
    "user_cluster_weights",
    "user_activity",
    "user_segment",
    "user_activity_band",
    "item_price_band",
    "item_age_band",
    "item_arrival_day",
    "user_arrival_day",
)


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    """Latents and features of one simulated world; user k is "u<k>", item k is "i<k>".

    Attributes:
      config: the config that built it.
      user_latents: float32 [num_users, dim].
      item_latents: float32 [num_items, dim].
      item_quality: float64 [num_items], added to every user's affinity.
      popularity_prior: float64 [num_items], the legacy system's prior; sums to 1.
      item_cluster: int32 [num_items].
      user_clusters: int32 [num_users, favourite_clusters] favourite clusters.
      user_cluster_weights: float64 [num_users, favourite_clusters]; rows sum to 1.
      user_activity: float64 [num_users] request-rate multiplier with mean 1.
      user_segment, user_activity_band, item_price_band, item_age_band: int8 feature codes.
      item_arrival_day, user_arrival_day: int16 [num_items], [num_users]: the first day
        an item can be recalled, a user makes requests (0 for all but the late ones).
    """

    config: SimulatorConfig
    user_latents: np.ndarray
    item_latents: np.ndarray
    item_quality: np.ndarray
    popularity_prior: np.ndarray
    item_cluster: np.ndarray
    user_clusters: np.ndarray
    user_cluster_weights: np.ndarray
    user_activity: np.ndarray
    user_segment: np.ndarray
    user_activity_band: np.ndarray
    item_price_band: np.ndarray
    item_age_band: np.ndarray
    item_arrival_day: np.ndarray
    user_arrival_day: np.ndarray


def build_world(config: SimulatorConfig) -> World:
    """Draws a world from `config.seed`; O(num_users + num_items) memory."""
    rng = np.random.default_rng([config.seed, STREAM_WORLD])
    num_clusters, dim, num_items, num_users = (
        config.num_clusters,
        config.dim,
        config.num_items,
        config.num_users,
    )
    centroids = rng.standard_normal((num_clusters, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    cluster_share = rng.dirichlet(np.full(num_clusters, 5.0))
    extra = rng.choice(num_clusters, size=num_items - num_clusters, p=cluster_share)
    item_cluster = rng.permutation(np.concatenate([np.arange(num_clusters), extra]))
    item_latents = centroids[item_cluster] + config.item_noise / np.sqrt(dim) * rng.standard_normal(
        (num_items, dim)
    )
    item_quality = QUALITY_STD * rng.standard_normal(num_items)
    rho = config.popularity_quality_correlation
    key = rho * item_quality / QUALITY_STD + np.sqrt(1 - rho**2) * rng.standard_normal(num_items)
    rank = np.empty(num_items)
    rank[np.argsort(-key, kind="stable")] = np.arange(1, num_items + 1)
    prior = rank**-config.popularity_skew
    prior /= prior.sum()

    # Favourites drawn with replacement: a repeat just merges weights, and it avoids a
    # [num_users, num_clusters] draw that would not fit for large worlds.
    favourites = config.favourite_clusters
    user_clusters = rng.choice(num_clusters, size=(num_users, favourites), p=cluster_share)
    weights = rng.dirichlet(np.ones(favourites), size=num_users)
    num_favourite = rng.integers(1, favourites + 1, size=num_users)
    weights *= np.arange(favourites)[None, :] < num_favourite[:, None]
    weights /= weights.sum(axis=1, keepdims=True)
    # Unused slots repeat the first favourite, so rounding in a slot lookup stays harmless.
    user_clusters = np.where(weights > 0, user_clusters, user_clusters[:, :1])
    direction = np.einsum("uk,ukd->ud", weights, centroids[user_clusters])
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
    user_latents = USER_NORM * direction + config.user_noise / np.sqrt(dim) * rng.standard_normal(
        (num_users, dim)
    )
    sigma = config.activity_skew
    activity = rng.lognormal(-(sigma**2) / 2, sigma, size=num_users)

    dominant = user_clusters[np.arange(num_users), np.argmax(weights, axis=1)]
    price_key = item_latents @ rng.standard_normal(dim)
    age_key = np.log(prior) / max(np.log(prior).std(), 1e-9) + rng.standard_normal(num_items)
    return World(
        config=config,
        user_latents=user_latents.astype(np.float32),
        item_latents=item_latents.astype(np.float32),
        item_quality=item_quality,
        popularity_prior=prior,
        item_cluster=item_cluster.astype(np.int32),
        user_clusters=user_clusters.astype(np.int32),
        user_cluster_weights=weights,
        user_activity=activity,
        user_segment=(dominant * min(NUM_SEGMENTS, num_clusters) // num_clusters).astype(np.int8),
        user_activity_band=np.digitize(activity, [0.75, 1.33]).astype(np.int8),
        item_price_band=_quantile_band(price_key, len(PRICE_BANDS)),
        item_age_band=_quantile_band(age_key, len(AGE_BANDS)),
        **_arrival_days(config),
    )


def _arrival_days(config: SimulatorConfig) -> dict[str, np.ndarray]:
    """{"item_arrival_day", "user_arrival_day"}: 0, or for the late share a day drawn
    uniformly from the second half of the logs; cold items arrive no earlier than the
    first eval day."""
    rng = np.random.default_rng([config.seed, STREAM_ARRIVALS])
    first_late = config.days // 2
    arrivals = {}
    for name, count, share in (
        ("item_arrival_day", config.num_items, config.late_item_share),
        ("user_arrival_day", config.num_users, config.late_user_share),
    ):
        late = rng.random(count) < share
        day = rng.integers(first_late, config.days, size=count)
        arrivals[name] = np.where(late, day, 0).astype(np.int16)
    cold = cold_items(config)
    first_eval = config.days - config.eval_days
    arrivals["item_arrival_day"][cold] = np.maximum(arrivals["item_arrival_day"][cold], first_eval)
    return arrivals


def cold_items(config: SimulatorConfig) -> np.ndarray:
    """The cold items' indices, sorted: `cold_item_count(config)` items drawn uniformly.

    Returns:
      int64 [num_cold]; empty when cold_item_fraction is 0.
    """
    count = cold_item_count(config)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([config.seed, STREAM_COLD])
    return np.sort(rng.choice(config.num_items, size=count, replace=False)).astype(np.int64)


def _quantile_band(key: np.ndarray, bands: int) -> np.ndarray:
    """Equal-frequency bands of `key`, 0 = lowest."""
    edges = np.quantile(key, np.arange(1, bands) / bands)
    return np.digitize(key, edges).astype(np.int8)


def save_world(world: World, path: str) -> None:
    """Writes the arrays as an .npz with fixed zip timestamps, so a seed gives equal bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in _ARRAYS:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(getattr(world, name)))
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def load_world(output_dir: str) -> World:
    """Reads the world a `simulate` run wrote to `output_dir` (world.npz + world.json).

    Raises:
      FileNotFoundError: either file is missing.
    """
    with open(os.path.join(output_dir, contracts.SIM_WORLD_SUMMARY)) as f:
        config = SimulatorConfig(**json.load(f)["config"])
    with np.load(os.path.join(output_dir, contracts.SIM_WORLD_ARRAYS)) as arrays:
        loaded = {name: arrays[name] for name in _ARRAYS if name in arrays}
    # Worlds written before late arrivals existed: everything arrives on day 0.
    loaded.update({k: v for k, v in _arrival_days(config).items() if k not in loaded})
    return World(config=config, **loaded)


def parse_ids(ids: Sequence[str], prefix: str, count: int, what: str) -> np.ndarray:
    """Maps ids such as "u12" to indices.

    Raises:
      ValueError: naming `what` and the first id that is malformed or out of range.
    """
    pattern = re.compile(rf"{prefix}(\d+)")
    indices = np.empty(len(ids), dtype=np.int64)
    for position, value in enumerate(ids):
        match = pattern.fullmatch(value) if isinstance(value, str) else None
        if match is None or int(match.group(1)) >= count:
            raise ValueError(
                f"{what}[{position}] = {value!r} is not an id {prefix}0..{prefix}{count - 1}"
            )
        indices[position] = int(match.group(1))
    return indices


def true_scores(world: World, user_ids: Sequence[str]) -> np.ndarray:
    """True affinity of users to every item.

    Args:
      world: from `build_world` or `load_world`.
      user_ids: ids "u<k>".

    Returns:
      float64 [len(user_ids), num_items], columns in catalog order (item k = "i<k>").

    Raises:
      ValueError: an unknown user id (named).
    """
    users = parse_ids(user_ids, "u", world.config.num_users, "user_ids")
    return affinity(world, users)


def affinity(world: World, users: np.ndarray, items_t: np.ndarray | None = None) -> np.ndarray:
    """Affinity of user indices to every item, in float64 so every caller ranks ties alike.

    Args:
      world: the world.
      users: int array [num_users_scored] of user indices.
      items_t: optional float64 [dim, num_items] transposed item latents, passed by callers
        that score many blocks so the cast is paid once.

    Returns:
      float64 [num_users_scored, num_items].
    """
    if items_t is None:
        items_t = world.item_latents.T.astype(np.float64)
    return world.user_latents[users].astype(np.float64) @ items_t + world.item_quality[None, :]
