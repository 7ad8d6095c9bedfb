"""The simulator's ground truth: users, items, clusters, quality and popularity.

Geometry (constants below, fixed so a seed alone fixes the world):
- `num_clusters` unit-norm centroids in `dim` dimensions. Cluster sizes follow a
  Dirichlet(5) share, and every cluster holds at least one item.
- Item latent = its cluster's centroid + N(0, ITEM_NOISE^2 / dim) per coordinate.
  Item quality ~ N(0, QUALITY_STD^2).
- A user likes 1..MAX_FAVOURITE_CLUSTERS clusters with Dirichlet(1) weights; the latent is
  USER_NORM times the normalised weighted sum of those centroids + N(0, USER_NOISE^2 / dim).
- True affinity = dot(user, item) + item quality.
- Popularity prior: Zipf, p ∝ rank^-popularity_skew, where the rank sorts a key that is
  correlated only POPULARITY_QUALITY_CORRELATION with quality. Popularity is therefore
  mostly luck, and the gap between it and affinity is the bias a trainer must undo.
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
from common.settings import ConfigError, Settings, setting

ITEM_NOISE = 0.5
USER_NORM = 2.0
USER_NOISE = 0.5
QUALITY_STD = 0.3
MAX_FAVOURITE_CLUSTERS = 3
POPULARITY_QUALITY_CORRELATION = 0.3
ACTIVITY_SIGMA = 0.5
NUM_SEGMENTS = 8
ACTIVITY_BANDS = ("low", "mid", "high")
PRICE_BANDS = ("p0", "p1", "p2", "p3")
AGE_BANDS = ("new", "mid", "old")
# Users scored per block in `true_scores` callers: bounds a block to ~4M floats.
SCORE_BLOCK_FLOATS = 1 << 22
# Seed streams, so each stage draws from its own generator whatever the others do.
STREAM_WORLD, STREAM_DAYS, STREAM_REQUESTS, STREAM_RANDOM_EXPOSURE = 1, 2, 3, 4

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
)


@dataclasses.dataclass(frozen=True)
class SimulatorConfig(Settings):
    """Size and behaviour of a simulated world; defaults build in a couple of seconds."""

    num_users: int = setting(1000, "users in the world", min=1)
    num_items: int = setting(2000, "items in the corpus", min=1)
    num_clusters: int = setting(20, "item clusters (categories)", min=1)
    dim: int = setting(16, "latent dimension of true preferences", min=1)
    days: int = setting(10, "logged days, eval period included", min=1)
    eval_days: int = setting(2, "last days that form the next (eval) period", min=1)
    requests_per_user_per_day: float = setting(
        1.0, "mean requests per user per day (Poisson)", min=1e-9
    )
    popularity_skew: float = setting(
        1.1, "Zipf exponent of the legacy system's popularity prior", min=0
    )
    recall_size: int = setting(100, "items the legacy recall stage returns per request", min=1)
    expose_size: int = setting(10, "items the legacy ranker exposes per request", min=1)
    random_exposure_users: int = setting(300, "test users given a random-exposure request", min=0)
    random_exposure_size: int = setting(
        50, "items shown uniformly at random to each of them", min=1
    )
    true_top_k: int = setting(200, "length of each test user's true top-K list", min=1)
    seed: int = setting(0, "random seed (same seed, same bytes)", min=0)
    start_timestamp: int = setting(1_700_000_000, "first logged second", min=0)

    def check(self) -> None:
        if self.eval_days >= self.days:
            raise ConfigError(f"{self.eval_days} must be < days ({self.days})", "eval_days")
        bounds = [("expose_size", "recall_size")]
        bounds += [
            (name, "num_items")
            for name in ("recall_size", "random_exposure_size", "true_top_k", "num_clusters")
        ]
        bounds.append(("random_exposure_users", "num_users"))
        for name, bound in bounds:
            value, limit = getattr(self, name), getattr(self, bound)
            if value > limit:
                raise ConfigError(f"{value} must be <= {bound} ({limit})", name)


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
      user_clusters: int32 [num_users, MAX_FAVOURITE_CLUSTERS] favourite clusters.
      user_cluster_weights: float64 [num_users, MAX_FAVOURITE_CLUSTERS]; rows sum to 1.
      user_activity: float64 [num_users] request-rate multiplier with mean 1.
      user_segment, user_activity_band, item_price_band, item_age_band: int8 feature codes.
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
    item_latents = centroids[item_cluster] + ITEM_NOISE / np.sqrt(dim) * rng.standard_normal(
        (num_items, dim)
    )
    item_quality = QUALITY_STD * rng.standard_normal(num_items)
    rho = POPULARITY_QUALITY_CORRELATION
    key = rho * item_quality / QUALITY_STD + np.sqrt(1 - rho**2) * rng.standard_normal(num_items)
    rank = np.empty(num_items)
    rank[np.argsort(-key, kind="stable")] = np.arange(1, num_items + 1)
    prior = rank**-config.popularity_skew
    prior /= prior.sum()

    # Favourites drawn with replacement: a repeat just merges weights, and it avoids a
    # [num_users, num_clusters] draw that would not fit for large worlds.
    user_clusters = rng.choice(
        num_clusters, size=(num_users, MAX_FAVOURITE_CLUSTERS), p=cluster_share
    )
    weights = rng.dirichlet(np.ones(MAX_FAVOURITE_CLUSTERS), size=num_users)
    num_favourite = rng.integers(1, MAX_FAVOURITE_CLUSTERS + 1, size=num_users)
    weights *= np.arange(MAX_FAVOURITE_CLUSTERS)[None, :] < num_favourite[:, None]
    weights /= weights.sum(axis=1, keepdims=True)
    # Unused slots repeat the first favourite, so rounding in a slot lookup stays harmless.
    user_clusters = np.where(weights > 0, user_clusters, user_clusters[:, :1])
    direction = np.einsum("uk,ukd->ud", weights, centroids[user_clusters])
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
    user_latents = USER_NORM * direction + USER_NOISE / np.sqrt(dim) * rng.standard_normal(
        (num_users, dim)
    )
    activity = rng.lognormal(-(ACTIVITY_SIGMA**2) / 2, ACTIVITY_SIGMA, size=num_users)

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
    )


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
        return World(config=config, **{name: arrays[name] for name in _ARRAYS})


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
