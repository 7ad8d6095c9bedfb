"""IndexConfig: how the item embeddings are indexed (exact or ScaNN), and its defaults.

The kind follows the corpus size the way ScaNN's own configuration guide does: brute
force below ~20k items, asymmetric hashing (AH) with reordering up to ~100k, and a
k-means partitioning tree (leaves ~ sqrt(n)) in front of AH above that. AH uses
anisotropic quantization, which keeps the large inner products exact where it matters.
"""

import dataclasses
import math
from typing import Any

from common.settings import ConfigError, Settings, setting

KINDS = ("auto", "brute_force", "scann")


@dataclasses.dataclass(frozen=True)
class IndexConfig(Settings):
    """How to index the item embeddings (`twotower export --index-*` flags)."""

    kind: str = setting(
        "auto",
        "brute_force (exact), scann, or auto (brute force below brute_force_below items)",
        choices=KINDS,
    )
    brute_force_below: int = setting(20_000, "corpus size under which auto stays exact", min=0)
    partition_above: int = setting(
        100_000, "corpus size from which ScaNN partitions into leaves", min=0
    )
    num_leaves: int = setting(0, "ScaNN partitioning leaves; 0 = round(sqrt(items))", min=0)
    num_leaves_to_search: int = setting(
        0, "ScaNN leaves searched per query; 0 = max(1, leaves / 10)", min=0
    )
    dimensions_per_block: int = setting(
        2, "AH dimensions per 4-bit code (ScaNN recommends 2)", min=1
    )
    anisotropic_quantization_threshold: float = setting(
        0.2, "AH noise-shaping threshold eta (ScaNN's guide: 0.2 for inner products)"
    )
    reordering_num_neighbors: int = setting(1000, "AH candidates rescored exactly per query", min=1)
    training_sample_size: int = setting(
        250_000, "items sampled to train the partitioner and the quantizer", min=1
    )
    spherical: bool = setting(
        False, "spherical k-means for unit-length embeddings (set for cosine models)"
    )
    num_neighbors: int = setting(100, "default K of a search", min=1)

    def check(self) -> None:
        if self.num_leaves and self.num_leaves_to_search > self.num_leaves:
            raise ConfigError(
                f"{self.num_leaves_to_search} exceeds num_leaves {self.num_leaves}",
                "num_leaves_to_search",
            )

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "IndexConfig":
        return cls(**config)

    def resolved(self, num_items: int) -> "IndexConfig":
        """This config with "auto" and the 0 defaults replaced for `num_items` items."""
        kind = self.kind
        if kind == "auto":
            kind = "brute_force" if num_items < self.brute_force_below else "scann"
        leaves = 0
        to_search = 0
        if kind == "scann" and num_items >= self.partition_above:
            leaves = self.num_leaves or max(2, round(math.sqrt(num_items)))
            to_search = min(leaves, self.num_leaves_to_search or max(1, leaves // 10))
        return dataclasses.replace(
            self, kind=kind, num_leaves=leaves, num_leaves_to_search=to_search
        )
