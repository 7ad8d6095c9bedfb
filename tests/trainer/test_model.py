import numpy as np
import tensorflow as tf

from trainer.model import TwoTowerModel
from trainer.towers import CandidateTower, QueryTower


def _model(**kwargs):
    query = QueryTower(
        user_vocabulary=["u1", "u2"],
        item_ids=["i1", "i2", "i3"],
        user_feature_vocabularies={"seg": ["s1", "s2"]},
        embedding_dim=4,
        hidden_units=[8],
        output_dim=3,
    )
    candidate = CandidateTower(
        item_ids=["i1", "i2", "i3"],
        item_clusters=["c1", "c1", "c2"],
        item_features={"band": [["b1"], ["b2"], []]},
        embedding_dim=4,
        hidden_units=[8],
        output_dim=3,
    )
    return TwoTowerModel(query, candidate, **kwargs)


BATCH = {
    "user_id": tf.constant(["u1", "u2", "u1"]),
    "history": tf.constant([["i2", ""], ["i1", "i3"], ["", ""]]),
    "user.seg": tf.constant([["s1"], ["s2"], ["s1"]]),
    "item_id": tf.constant(["i1", "i3", "i1"]),
}


def _softmax_loss(logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.trace(log_probs)  # positives are on the diagonal; TFRS sums over the batch


def test_loss_is_in_batch_softmax_with_masks_and_logq():
    tf.keras.utils.set_random_seed(1)
    model = _model(item_probabilities={"i1": 0.5, "i3": 0.25})
    q = model.query_embeddings(BATCH).numpy()
    c = model.candidate_embeddings(BATCH["item_id"]).numpy()
    logits = q @ c.T - np.log([0.5, 0.25, 0.5])  # logQ of each column's item
    # Rows 0 and 2 share item i1: the copy that is not the row's own positive is masked.
    logits[0, 2] = logits[2, 0] = -np.inf
    expected = _softmax_loss(np.where(np.isinf(logits), -1e9, logits))
    np.testing.assert_allclose(model.compute_loss(BATCH).numpy(), expected, rtol=1e-5)


def test_cosine_uses_unit_vectors_and_temperature():
    tf.keras.utils.set_random_seed(2)
    model = _model(similarity="cosine", temperature=0.5, remove_accidental_hits=False)
    q = model.query_embeddings(BATCH).numpy()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    c = model.candidate_embeddings(BATCH["item_id"]).numpy()
    expected = _softmax_loss(q @ c.T / 0.5)
    np.testing.assert_allclose(model.compute_loss(BATCH).numpy(), expected, rtol=1e-5)


def test_unknown_user_and_item_get_oov_embeddings():
    tf.keras.utils.set_random_seed(3)
    model = _model()
    # One OOV bucket: lookup index 0 is padding, 1 the bucket, 2.. the vocabulary.
    user_id = model.query_tower._user_id
    looked_up = user_id(tf.constant(["nobody", "stranger", "u1", "u2"])).numpy()
    table = user_id._embedding.embeddings.numpy()
    np.testing.assert_array_equal(looked_up[0], table[1])
    np.testing.assert_array_equal(looked_up[1], table[1])
    np.testing.assert_array_equal(looked_up[2:], table[2:4])
    assert not np.allclose(table[1], table[2]) and not np.allclose(table[1], table[3])

    # Through the whole tower: two unknown users with the same features and history
    # get the same embedding, which is not a known user's.
    batch = dict(BATCH, user_id=tf.constant(["nobody", "stranger", "u1"]))
    batch["history"] = tf.constant([["i2", ""]] * 3)
    batch["user.seg"] = tf.constant([["s1"]] * 3)
    users = model.query_embeddings(batch).numpy()
    np.testing.assert_array_equal(users[0], users[1])
    assert np.abs(users[0] - users[2]).max() > 1e-4

    # Items outside the catalog share the item OOV bucket (no cluster, no features).
    items = model.candidate_embeddings(tf.constant(["not-an-item", "another", "i1"])).numpy()
    np.testing.assert_array_equal(items[0], items[1])
    assert np.abs(items[0] - items[2]).max() > 1e-4
    item_id = model.candidate_tower._item_id
    np.testing.assert_array_equal(
        item_id(tf.constant(["not-an-item"])).numpy()[0], item_id._embedding.embeddings.numpy()[1]
    )


def test_config_round_trip_and_weights_give_identical_scores(tmp_path):
    tf.keras.utils.set_random_seed(4)
    model = _model(item_probabilities={"i1": 0.5})
    scores = (
        model.query_embeddings(BATCH).numpy()
        @ model.candidate_embeddings(tf.constant(["i1", "i2", "i3"])).numpy().T
    )
    model.save_weights(str(tmp_path / "w"))
    clone = TwoTowerModel.from_config(model.get_config())
    clone.load_weights(str(tmp_path / "w")).expect_partial()
    clone_scores = (
        clone.query_embeddings(BATCH).numpy()
        @ clone.candidate_embeddings(tf.constant(["i1", "i2", "i3"])).numpy().T
    )
    np.testing.assert_allclose(clone_scores, scores, rtol=1e-6)
    assert clone.get_config()["similarity"] == "dot"


def test_mixed_negatives_share_the_mixture_proposal():
    from trainer.negatives.candidates import Batch
    from trainer.negatives.corpus import CorpusNegatives
    from trainer.negatives.in_batch import InBatchNegatives

    sources = [
        InBatchNegatives("static", {"i1": 0.5, "i3": 0.25}),
        CorpusNegatives(6, corrected=True),
    ]
    model = _model(sources=sources, loss="softmax")
    ids = model.candidate_tower.item_index(BATCH["item_id"])  # i1, i3, i1 as indices 0, 2, 0
    batch = Batch(
        BATCH,
        model.query_embeddings(BATCH),
        ids,
        model.candidate_embeddings(ids),
        model.candidate_embeddings,
        3,
        model.candidate_tower.item_index,
        True,
    )
    candidates = [s.sample(batch) for s in sources]
    positive_log_q = model._apply_corrections(batch, list(zip(sources, candidates, strict=True)))
    # expected count = 3 rows × click share + 6 uniform draws / 3 items
    # i1: 3·0.5 + 2 = 3.5; i3: 3·0.25 + 2 = 2.75; i2 (never clicked -> 0.25): 2.75
    np.testing.assert_allclose(positive_log_q.numpy(), np.log([3.5, 2.75, 3.5]), rtol=1e-5)
    corpus_ids = candidates[1].ids.numpy()  # catalog indices of i1, i2, i3
    expected = np.log([{0: 3.5, 1: 2.75, 2: 2.75}[i] for i in corpus_ids])
    np.testing.assert_allclose(candidates[1].log_q.numpy(), expected, rtol=1e-5)
    loss = model.compute_loss(BATCH, training=True)
    assert np.isfinite(loss.numpy())
