"""Numeric, vector and text features in the towers; content clusters; the cold view."""

import types

import numpy as np
import pytest
import tensorflow as tf

from trainer import metrics
from trainer.content import NoContent, content_clusters, content_embeddings
from trainer.dense_feature import DenseFeature
from trainer.towers import CandidateTower, QueryTower


def test_numeric_is_log_standardised_and_missing_is_learned():
    layer = DenseFeature("numeric", 1, mean=1.0, std=2.0, log=True, name="age")
    values = tf.constant([[np.e - 1.0], [np.nan], [0.0]], tf.float32)
    out = layer(values).numpy()
    np.testing.assert_allclose(out[:, 0], [0.0, 0.0, -0.5], atol=1e-6)
    layer.weights[0].assign([3.0])  # the learned "missing" value
    np.testing.assert_allclose(layer(values).numpy()[:, 0], [0.0, 3.0, -0.5], atol=1e-6)


def test_missing_value_gets_gradient_and_no_nan():
    layer = DenseFeature("vector", 2, name="emb")
    values = tf.constant([[1.0, 2.0], [np.nan, np.nan]], tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(values) * tf.constant([[1.0, 1.0], [2.0, 3.0]]))
    (gradient,) = tape.gradient(loss, layer.trainable_weights)
    np.testing.assert_allclose(gradient.numpy(), [2.0, 3.0])
    assert np.isfinite(layer(values).numpy()).all()


def test_buckets_embed_the_value_and_a_missing_bucket():
    layer = DenseFeature("numeric", 1, boundaries=[0.0, 10.0], embedding_dim=4, name="price")
    out = layer(tf.constant([[-1.0], [5.0], [50.0], [np.nan]])).numpy()
    assert out.shape == (4, 5) and layer.output_size == 5
    table = layer.weights[1].numpy()  # buckets 0, 1, 2 and 3 (missing)
    for row, bucket in enumerate([0, 1, 2, 3]):
        np.testing.assert_allclose(out[row, 1:], table[bucket])


def _towers():
    spec = {"kind": "numeric", "dim": 1, "mean": 10.0, "std": 5.0, "log": False}
    query = QueryTower(
        user_vocabulary=["u1", "u2"],
        item_ids=["i1", "i2", "i3"],
        user_feature_vocabularies={"gender": ["F", "M"]},
        user_dense={"age": spec, "emb": {"kind": "vector", "dim": 3}},
        embedding_dim=4,
        hidden_units=[8],
        output_dim=4,
    )
    values = {
        "year": np.array([[1990.0], [np.nan], [2000.0]], np.float32),
        "title": np.eye(3, dtype=np.float32)[:, :2],
    }
    candidate = CandidateTower(
        item_ids=["i1", "i2", "i3"],
        item_clusters=["a", "a", "b"],
        item_features={},
        item_dense={
            "year": {"kind": "numeric", "dim": 1, "mean": 1995.0, "std": 5.0},
            "title": {"kind": "text", "dim": 2},
        },
        item_dense_values=values,
        embedding_dim=4,
        hidden_units=[8],
        output_dim=4,
    )
    return query, candidate


def test_query_tower_takes_raw_floats_and_says_their_kinds():
    query, _ = _towers()
    specs = query.input_specs()
    assert specs["user.age"].dtype == tf.float32 and specs["user.age"].shape.as_list() == [None, 1]
    assert specs["user.emb"].shape.as_list() == [None, 3]
    assert specs["user.gender"].dtype == tf.string
    assert query.input_kinds()["user.emb"] == {"kind": "vector", "dim": 3}
    inputs = query.inputs_from({"user_id": np.array([b"u1", b"u2"], dtype=object)}, 2)
    assert np.isnan(inputs["user.age"].numpy()).all()  # absent: missing, not zero
    out = query(inputs).numpy()
    assert out.shape == (2, 4) and np.isfinite(out).all()
    inputs["user.age"] = tf.constant([[30.0], [30.0]])
    assert not np.allclose(query(inputs).numpy(), out)  # the value reaches the tower


def test_candidate_tower_reads_dense_catalog_rows():
    _, candidate = _towers()
    by_id = candidate(tf.constant(["i1", "i2", "i3", "unknown"])).numpy()
    assert np.isfinite(by_id).all()
    np.testing.assert_allclose(by_id[:3], candidate.encode_indices(tf.constant([0, 1, 2])).numpy())
    # The config stays small: the specs, never the catalog-sized values.
    assert "item_dense_values" not in candidate.get_config()
    with pytest.raises(ValueError, match="expected \\(3, 2\\)"):
        CandidateTower(
            item_ids=["i1", "i2", "i3"],
            item_clusters=["a", "a", "b"],
            item_features={},
            item_dense={"title": {"kind": "text", "dim": 2}},
            item_dense_values={"title": np.zeros((2, 2))},
            embedding_dim=4,
            hidden_units=[],
            output_dim=4,
        )


def _fake_dataset(values, kinds):
    return types.SimpleNamespace(
        directory="/data/x",
        item_dense=lambda: kinds,
        item_dense_values=lambda: values,
    )


def test_content_clusters_follow_the_content():
    rng = np.random.default_rng(0)
    centres = np.eye(4, dtype=np.float32) * 5
    text = np.concatenate([centres[i] + rng.normal(0, 0.3, (10, 4)) for i in range(4)])
    text[3] = np.nan  # an item without text clusters by its other features (here: none)
    dataset = _fake_dataset({"title": text.astype(np.float32)}, {"title": {"kind": "text"}})
    embedded = content_embeddings(dataset)
    np.testing.assert_allclose(np.linalg.norm(embedded[[0, 15]], axis=1), 1.0, rtol=1e-5)
    assert not embedded[3].any()
    labels = content_clusters(dataset, 4, seed=0)
    for group in range(4):
        rows = [r for r in range(group * 10, group * 10 + 10) if r != 3]
        assert len(set(labels[rows].tolist())) == 1
    assert len(set(labels.tolist())) == 4


def test_content_clusters_need_content():
    dataset = _fake_dataset({}, {"year": {"kind": "numeric"}})
    with pytest.raises(NoContent, match="cluster_source=content needs item text or vector"):
        content_clusters(dataset, 3)


def test_cold_item_metrics():
    cold = np.array([False, False, True, True])
    ranked = np.array([[2, 0, 1], [0, 1, -1], [3, 2, 0]])
    relevant = [np.array([2, 0]), np.array([1]), np.array([2])]
    view = metrics.cold_item_metrics(ranked, relevant, cold, [1, 2])
    assert view["users"] == 2  # user 1 clicked no cold item
    assert view["recall@1"] == pytest.approx(0.5)  # user 0 finds item 2, user 2 not at 1
    assert view["recall@2"] == pytest.approx(1.0)
    assert view["slot_share@1"] == pytest.approx(2 / 3)
    assert view["slot_share@2"] == pytest.approx(3 / 6)
