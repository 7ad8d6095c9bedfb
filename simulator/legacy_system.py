"""LegacySystem: the logged recommender, whose choices are the bias in the logs.

Per request:
1. Recall, biased toward popular items (`RecallSampler`): `recall_size` distinct items;
   a `recall_personalization` share of the draws come from the user's favourite
   clusters, the rest from the whole corpus, both by the popularity prior. Items that
   have not arrived yet are never recalled.
2. Ranker: score = affinity + N(0, ranker_noise^2) + ranker_popularity_weight *
   z(log prior), with z the corpus-wide standardisation; the top `expose_size` are
   exposed, best first.
3. Clicks: each exposed position p (0-based) is clicked independently with
   P = sigmoid(CLICK_SCALE * affinity + CLICK_BIAS) / (1 + p)^position_bias.
"""

import numpy as np

from simulator.recall import RecallSampler
from simulator.world import World

CLICK_SCALE = 2.0
CLICK_BIAS = -3.8


def click_probability(true_affinity: np.ndarray) -> np.ndarray:
    """Click probability before any position effect; same shape as `true_affinity`."""
    return 1.0 / (1.0 + np.exp(-(CLICK_SCALE * true_affinity + CLICK_BIAS)))


class LegacySystem:
    """Popularity-biased recall, a noisy ranker, position-biased clicks."""

    def __init__(self, world: World) -> None:
        """Precomputes what every request needs; O(num_items) memory."""
        config = world.config
        self._world = world
        self._expose_size = config.expose_size
        self._sampler = RecallSampler(world, config.recall_size, config.recall_personalization)
        log_prior = np.log(world.popularity_prior)
        self._prior_z = (log_prior - log_prior.mean()) / max(log_prior.std(), 1e-12)
        self._items = world.item_latents.astype(np.float64)
        self._users = world.user_latents.astype(np.float64)
        self._position_effect = (1.0 + np.arange(self._expose_size)) ** -config.position_bias

    def serve(
        self, rng: np.random.Generator, users: np.ndarray, day: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Runs a chunk of requests through recall, ranking and clicks.

        Args:
          rng: the chunk's generator.
          users: int array [num_requests] of user indices.
          day: the day of the requests (items arriving later are not recalled).

        Returns:
          recalled: int64 [num_requests, recall_size].
          exposed: int64 [num_requests, expose_size], best first.
          clicked: bool [num_requests, expose_size], per exposed position.
        """
        config = self._world.config
        recalled = self._sampler.sample(rng, users, day)
        true_affinity = np.einsum("rd,rnd->rn", self._users[users], self._items[recalled])
        true_affinity += self._world.item_quality[recalled]
        score = true_affinity + config.ranker_noise * rng.standard_normal(true_affinity.shape)
        score += config.ranker_popularity_weight * self._prior_z[recalled]
        top = np.argpartition(-score, self._expose_size - 1, axis=1)[:, : self._expose_size]
        rank = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, rank, axis=1)
        p_click = click_probability(np.take_along_axis(true_affinity, top, axis=1))
        clicked = rng.random(p_click.shape) < p_click * self._position_effect
        return recalled, np.take_along_axis(recalled, top, axis=1), clicked
