"""A candidate tower that shows its id dropout masks (for the tests of the masks' draws).

Its id rows are all ones and it has nothing but the id (no cluster, no layer): an encoded
item is ones where its id was kept and zeros where it was hidden. Imported by the tests
and by the worker scripts they start (which run with the repository on PYTHONPATH).
"""

from trainer.towers import CandidateTower


def mask_tower(num_items: int, dim: int = 4, id_dropout: float = 0.5, seed: int = 3):
    return CandidateTower(
        item_ids=[f"i{i}" for i in range(num_items)],
        item_clusters=["c"] * num_items,
        item_features={},
        embedding_dim=dim,
        hidden_units=[],
        output_dim=dim,
        projection=False,
        cluster=False,
        item_id_init="ones",
        id_dropout=id_dropout,
        seed=seed,
    )
