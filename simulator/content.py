"""Item content vectors: what a content encoder would see of an item, informative but noisy.

A world with `content_dim > 0` gives every item a content vector (items.jsonl
`features.content`): a fixed random projection of its true latent (the vector that drives
affinity in `simulator.world`), scaled so the signal's root mean square per coordinate is
1, plus N(0, content_noise^2) per coordinate. So `content_noise` is the noise's standard
deviation relative to the signal's; item quality (the affinity's per-item offset) is not
in it. docs/simulator.md measures how well content similarity tracks true similarity.

Streaming: vectors come in blocks of CONTENT_BLOCK items, each block's noise from a
generator seeded by (seed, STREAM_CONTENT, block), so memory is O(one block) and the same
seed gives the same vectors.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from simulator.world import STREAM_CONTENT, World

CONTENT_BLOCK = 4096


def item_content_blocks(world: World) -> Iterator[np.ndarray]:
    """Content vectors of the items in catalog order, a block at a time.

    Args:
      world: a world whose config has content_dim > 0.

    Yields:
      float64 [block_items, content_dim]; blocks of CONTENT_BLOCK items, the last shorter.

    Raises:
      ValueError: content_dim is 0.
    """
    config = world.config
    if config.content_dim < 1:
        raise ValueError(f"content_dim is {config.content_dim}: this world has no content")
    # Key 0 is the projection's generator, 1 + b the noise of block b.
    projection = np.random.default_rng([config.seed, STREAM_CONTENT, 0]).standard_normal(
        (config.dim, config.content_dim)
    )
    latents = world.item_latents.astype(np.float64)
    # RMS of latents @ projection over every item and coordinate, without the product:
    # the sum of ||x P||^2 over items is trace(P^T (X^T X) P).
    total = np.einsum("dc,de,ec->", projection, latents.T @ latents, projection)
    scale = np.sqrt(total / (config.num_items * config.content_dim))
    for block, first in enumerate(range(0, config.num_items, CONTENT_BLOCK)):
        signal = latents[first : first + CONTENT_BLOCK] @ projection / max(scale, 1e-12)
        rng = np.random.default_rng([config.seed, STREAM_CONTENT, 1 + block])
        yield signal + config.content_noise * rng.standard_normal(signal.shape)


def item_content(world: World) -> np.ndarray:
    """All items' content vectors, float64 [num_items, content_dim] (see the module)."""
    return np.concatenate(list(item_content_blocks(world)))
