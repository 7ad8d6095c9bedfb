"""SimulatorConfig: the size of a simulated world and what drives its bias and preferences.

The knobs come in four groups (docs/simulator.md describes each and the presets):
- size: users, items, clusters, days, requests;
- the legacy system, whose logs carry the bias: how much its recall follows popularity
  (`popularity_skew`, `recall_personalization`), how good its ranker is (`ranker_noise`,
  `ranker_popularity_weight`), how many items it shows (`expose_size`) and how strongly
  a user's attention falls down the list (`position_bias`);
- the users' true preferences: how concentrated on a few clusters (`favourite_clusters`,
  `user_noise`, `item_noise`), how tied popularity is to quality
  (`popularity_quality_correlation`), how skewed activity is (`activity_skew`);
- time: the share of items and users that appear late (`late_item_share`,
  `late_user_share`) and of cold items, never shown before the eval period
  (`cold_item_fraction`);
- content: item content vectors, a noisy projection of the true item latents
  (`content_dim`, `content_noise`).
The defaults are the world every earlier measurement used; `PRESETS` name a family of
worlds that differ in how bias and preferences arise (`twotower simulate --preset`).
"""

import dataclasses
from typing import Any

from common.settings import ConfigError, Settings, setting


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
    recall_personalization: float = setting(
        0.25,
        "share of the legacy recall's draws from the user's favourite clusters (the rest "
        "follow popularity over the whole corpus)",
        min=0,
        max=1,
    )
    recall_size: int = setting(100, "items the legacy recall stage returns per request", min=1)
    ranker_noise: float = setting(
        1.0, "std of the legacy ranker's error on true affinity (0: a perfect ranker)", min=0
    )
    ranker_popularity_weight: float = setting(
        1.0, "weight of standardised log popularity in the legacy ranker's score", min=0
    )
    expose_size: int = setting(10, "items the legacy ranker exposes per request", min=1)
    position_bias: float = setting(
        0.5, "click probability falls as 1 / (1 + position)^position_bias", min=0
    )
    favourite_clusters: int = setting(3, "a user likes 1 to this many clusters", min=1)
    user_noise: float = setting(
        0.5, "user latent noise around their clusters (high: spread preferences)", min=0
    )
    item_noise: float = setting(0.5, "item latent noise around its cluster's centroid", min=0)
    popularity_quality_correlation: float = setting(
        0.3, "correlation of the popularity rank's key with item quality", min=-1, max=1
    )
    activity_skew: float = setting(
        0.5, "sigma of the lognormal request rate of users (0: every user alike)", min=0
    )
    late_item_share: float = setting(
        0.0, "share of items that appear only in the second half of the logged days", min=0, max=1
    )
    late_user_share: float = setting(
        0.0, "share of users whose first request falls in the second half", min=0, max=1
    )
    cold_item_fraction: float = setting(
        0.0,
        "share of items (cold items, listed in cold_items.txt) the legacy system never "
        "shows before the eval period; from its first day they are ordinary items",
        min=0,
        max=1,
    )
    content_dim: int = setting(
        0,
        "length of each item's content vector (items.jsonl features.content): a random "
        "projection of its true latent plus noise; 0: no content vectors",
        min=0,
    )
    content_noise: float = setting(
        1.0, "std of the content vectors' noise relative to the signal's (RMS)", min=0
    )
    random_exposure_users: int = setting(300, "test users given a random-exposure request", min=0)
    random_exposure_size: int = setting(
        50, "items shown uniformly at random to each of them", min=1
    )
    true_top_k: int = setting(200, "length of each test user's true top-K list", min=1)
    propensity_users: int = setting(
        100,
        "users (at most all) whose true recall and exposure probabilities are measured "
        "(propensities.jsonl)",
        min=0,
    )
    propensity_requests: int = setting(
        200, "simulated requests per such user to measure them", min=1
    )
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
        warm = self.num_items - cold_item_count(self)
        if warm < self.recall_size:
            raise ConfigError(
                f"{self.cold_item_fraction} leaves {warm} items before the eval period, "
                f"fewer than recall_size ({self.recall_size})",
                "cold_item_fraction",
            )


def cold_item_count(config: SimulatorConfig) -> int:
    """How many items are cold: the rounded share, at least one when the share is > 0."""
    if config.cold_item_fraction <= 0:
        return 0
    return max(1, round(config.cold_item_fraction * config.num_items))


# A family of worlds that differ in how bias and preferences arise (docs/simulator.md).
PRESETS: dict[str, dict[str, Any]] = {
    # The world of every earlier measurement: popularity-led recall, a noisy ranker that
    # also favours popular items, moderate position bias, users with 1-3 favourite clusters.
    "default": {},
    # The legacy system barely personalises: recall almost only by a steeper popularity,
    # a weak ranker that leans on popularity. Logs say little about taste beyond the head.
    "popularity-trap": {
        "popularity_skew": 1.3,
        "recall_personalization": 0.05,
        "ranker_noise": 2.0,
        "ranker_popularity_weight": 2.0,
    },
    # A good legacy system: personalised recall, an accurate ranker, mild position bias.
    # The logs are informative; the remaining bias is mostly exposure of what it liked.
    "good-ranker": {
        "recall_personalization": 0.6,
        "ranker_noise": 0.3,
        "ranker_popularity_weight": 0.2,
        "position_bias": 0.2,
    },
    # Preferences spread across clusters (one favourite cluster's pull is weak next to
    # each user's own taste), few items shown per request with a strong position effect.
    "spread-tastes": {
        "favourite_clusters": 1,
        "user_noise": 1.5,
        "item_noise": 1.0,
        "expose_size": 5,
        "position_bias": 1.0,
    },
    # Skewed activity (a few heavy users write most logs) and a catalog and user base that
    # grow: 20% of items and users appear in the second half; popularity tied to quality.
    "growing-catalog": {
        "activity_skew": 1.2,
        "late_item_share": 0.2,
        "late_user_share": 0.2,
        "popularity_quality_correlation": 0.7,
    },
}


def preset(name: str, **overrides: Any) -> SimulatorConfig:
    """The config of a named preset, with `overrides` on top.

    Raises:
      ConfigError: an unknown preset (the known ones are named) or an invalid override.
    """
    if name not in PRESETS:
        raise ConfigError(f"{name!r} is not one of {', '.join(PRESETS)}", "preset")
    return SimulatorConfig(**{**PRESETS[name], **overrides})
