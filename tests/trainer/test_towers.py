"""The candidate tower's encoding of catalog indices."""

import numpy as np
import pytest
import tensorflow as tf

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
