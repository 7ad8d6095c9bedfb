"""The candidate tower's encoding of catalog indices."""

import numpy as np
import pytest
import tensorflow as tf

from tests.id_dropout_tower import mask_tower
from trainer.towers import CandidateTower


@pytest.mark.parametrize("hidden", [[], [8]])
def test_repeated_items_encode_alike_with_and_without_the_dedupe(hidden):
    """With hidden layers the tower encodes each distinct item once (tf.unique); with
    none it encodes every slot (cheaper than the unique). Same embeddings either way."""
    tower = CandidateTower(
        item_ids=["i0", "i1", "i2"],
        item_clusters=["a", "a", "b"],
        item_features={},
        embedding_dim=4,
        hidden_units=hidden,
        output_dim=4,
    )
    indices = tf.constant([[2, 0, 2], [-1, 2, 0]], tf.int64)
    encoded = tower.encode_indices(indices).numpy()
    one_by_one = tower.encode_indices(tf.constant([0, 2, -1], tf.int64)).numpy()
    np.testing.assert_allclose(encoded[0], one_by_one[[1, 0, 1]], rtol=1e-6)
    np.testing.assert_allclose(encoded[1], one_by_one[[2, 1, 0]], rtol=1e-6)
    graph = tf.function(tower.encode_indices).get_concrete_function(indices).graph
    uniques = [op for op in graph.get_operations() if op.type == "Unique"]
    assert len(uniques) == (1 if hidden else 0)


def test_id_dropout_masks_are_drawn_per_encode_from_the_seed_and_a_saved_count():
    def tower(seed):  # an encoded item: ones if its id was kept, zeros if hidden
        return mask_tower(200, dim=8, id_dropout=0.25, seed=seed)

    rows = tf.range(200, dtype=tf.int64)

    def kept(t):
        return t.encode_indices(rows, training=True).numpy()[:, 0]

    first_tower, same_seed, other_seed = tower(1), tower(1), tower(2)
    first, second = kept(first_tower), kept(first_tower)
    assert set(first) | set(second) <= {0.0, 1.0}
    assert 0.65 < first.mean() < 0.85 and 0.65 < second.mean() < 0.85  # 75% kept
    assert (first != second).any()  # a new mask at every encode
    assert first_tower._dropout_draws.numpy() == 2  # the count the checkpoint saves
    # The same seed and count give the same masks, in the same order; another seed others.
    np.testing.assert_array_equal(kept(same_seed), first)
    np.testing.assert_array_equal(kept(same_seed), second)
    assert (kept(other_seed) != first).any()
    # Outside training nothing is hidden, and nothing is counted.
    np.testing.assert_array_equal(first_tower.encode_indices(rows).numpy()[:, 0], np.ones(200))
    assert first_tower._dropout_draws.numpy() == 2
    assert tower(0).get_config()["seed"] == 0 and first_tower.get_config()["seed"] == 1
