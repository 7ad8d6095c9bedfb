import numpy as np
import pytest
import tensorflow as tf

from trainer.token_bag import TokenBagEmbedding


def _layer():
    layer = TokenBagEmbedding(["a", "b", ""], embedding_dim=2)
    layer(tf.constant([["a"]]))  # build
    # Rows: 0 = padding "", 1 = OOV, 2 = "a", 3 = "b".
    layer.set_weights([np.array([[9, 9], [1, 1], [2, 0], [0, 4]], dtype=np.float32)])
    return layer


def test_mean_over_tokens_ignores_padding():
    out = _layer()(tf.constant([["a", "b"], ["a", ""], ["", ""], ["zzz", "a"]])).numpy()
    # ["a","b"] -> mean([2,0],[0,4]) = [1,2]; ["a",""] -> [2,0]; empty bag -> [0,0];
    # ["zzz"(OOV),"a"] -> mean([1,1],[2,0]) = [1.5,0.5]
    np.testing.assert_allclose(out, [[1, 2], [2, 0], [0, 0], [1.5, 0.5]])


def test_scalar_tokens_are_a_bag_of_one():
    np.testing.assert_allclose(_layer()(tf.constant(["b"])).numpy(), [[0, 4]])


def test_config_round_trip_and_saved_model(tmp_path):
    layer = _layer()
    clone = TokenBagEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    inputs = tf.keras.Input(shape=(None,), dtype=tf.string)
    model = tf.keras.Model(inputs, layer(inputs))
    model.save(str(tmp_path / "m"))
    loaded = tf.keras.models.load_model(str(tmp_path / "m"))
    tokens = tf.constant([["a", "zzz"], ["b", ""]])
    np.testing.assert_allclose(loaded(tokens).numpy(), model(tokens).numpy())


def test_rejects_bad_dim():
    with pytest.raises(ValueError, match="embedding_dim"):
        TokenBagEmbedding(["a"], embedding_dim=0)


def test_several_oov_buckets_spread_unknown_tokens():
    layer = TokenBagEmbedding(["a"], embedding_dim=1, num_oov_buckets=3)
    ids = layer._lookup(tf.constant([["a", "x1", "x2", "x3", "x4", ""]])).numpy()[0]
    # 0 = padding, 1..3 = OOV buckets, 4 = "a"
    assert ids[0] == 4 and ids[-1] == 0
    assert set(ids[1:5]) <= {1, 2, 3} and len(set(ids[1:5])) > 1
    assert TokenBagEmbedding.from_config(layer.get_config()).get_config()["num_oov_buckets"] == 3
