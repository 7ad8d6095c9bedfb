"""MomentumQueueNegatives: the lazy momentum update and the queue's contrastive loss."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.negatives.candidates import Batch
from trainer.negatives.momentum_queue import MomentumQueueNegatives
from trainer.towers import CandidateTower

ITEMS = ["i0", "i1", "i2", "i3", "i4", "i5"]
M = 0.8


def _tower():
    tf.keras.utils.set_random_seed(3)
    return CandidateTower(
        item_ids=ITEMS,
        item_clusters=["c0", "c0", "c1", "c1", "c2", "c2"],
        item_features={"tag": [["t0", "t1"], ["t1"], ["t2"], [], ["t0"], ["t3", "t4"]]},
        embedding_dim=4,
        hidden_units=[5],
        output_dim=3,
    )


def _batch(tower, positives, training=True):
    ids = tf.constant(positives)
    query = tf.constant(np.random.default_rng(len(positives)).normal(size=(len(positives), 3)))
    return Batch(
        {},
        tf.cast(query, tf.float32),
        ids,
        tower(ids),
        tower,
        tf.constant(ITEMS),
        tower.item_index,
        training,
    )


def _source(tower, size=4):
    source = MomentumQueueNegatives(size=size, dim=3, momentum=M)
    source.bind(tower)
    return source


def test_lazy_rows_equal_the_dense_momentum_update():
    tower = _tower()
    source = _source(tower)
    probe = tf.constant([0], tf.int64)
    tables = {name: table for name, (table, _) in tower.table_rows(probe).items()}
    assert set(tables) == {"item_id", "cluster", "item_tag"}
    momentum_tables = {name: table for name, (table, _) in source._tower.table_rows(probe).items()}
    position = {name: [w is t for w in tower.weights].index(True) for name, t in tables.items()}
    dense = [w for w in tower.weights if all(w is not t for t in tables.values())]
    momentum_dense = [
        w for w in source._tower.weights if all(w is not t for t in momentum_tables.values())
    ]
    assert len(dense) == len(momentum_dense) == 4  # the MLP's kernels and biases
    reference = [w.numpy() for w in tower.weights]  # the copy starts equal
    rng = np.random.default_rng(0)
    steps = [["i0", "i1"], ["i2"], ["i0", "i3"], ["i1", "i1"], ["i5"], ["i0", "i2"]]
    for positives in steps:
        batch = _batch(tower, positives)
        # Dense reference: every momentum weight moves toward the trained one every step.
        reference = [
            M * r + (1 - M) * w.numpy() for r, w in zip(reference, tower.weights, strict=True)
        ]
        before = {name: table.numpy() for name, table in momentum_tables.items()}
        source.extra_loss(batch)
        read = tower.table_rows(tf.constant([ITEMS.index(i) for i in positives], tf.int64))
        read = {name: np.unique(rows.numpy()) for name, (_, rows) in read.items()}
        for name, rows in read.items():
            moved = momentum_tables[name].numpy()
            expected = reference[position[name]]
            np.testing.assert_allclose(moved[rows], expected[rows], rtol=1e-5, atol=1e-6)
            # The rest of every table is untouched: a step's work goes by the rows read,
            # not by the catalog's or the vocabulary's size.
            others = np.setdiff1d(np.arange(len(moved)), rows)
            np.testing.assert_array_equal(moved[others], before[name][others])
        for mine, theirs in zip(momentum_dense, dense, strict=True):
            index = [w is theirs for w in tower.weights].index(True)
            np.testing.assert_allclose(mine.numpy(), reference[index], rtol=1e-5, atol=1e-6)
        source.update(batch)
        # The optimizer step: sparse on the rows the positives read, dense elsewhere.
        for name, rows in read.items():
            tables[name].scatter_add(
                tf.IndexedSlices(tf.constant(rng.normal(size=(len(rows), 4)), tf.float32), rows)
            )
        for weight in dense:
            weight.assign_add(tf.constant(rng.normal(size=weight.shape), tf.float32))
    # Rows not trained since their last move lag until their next positive (item i4 and
    # its cluster c2's row moved only with i5; token t0 last with i0).
    for name in ("item_id", "cluster", "item_tag"):
        assert not np.allclose(momentum_tables[name].numpy(), reference[position[name]]), name


def test_queue_loss_uses_momentum_embeddings_and_masks_the_positive():
    tower = _tower()
    source = _source(tower)
    assert source.sample(_batch(tower, ["i0"])) is None
    first = _batch(tower, ["i0", "i1", "i2"])
    source.extra_loss(first)
    source.update(first)
    queued = source._tower(tf.constant(["i0", "i1", "i2"])).numpy()
    batch = _batch(tower, ["i1", "i4"], training=False)  # evaluation: nothing moves
    before = [w.numpy() for w in source._tower.weights]
    query = batch.query.numpy()
    positive = source._tower(batch.positive_ids).numpy()
    expected = 0.0
    for row, own in enumerate([1, None]):
        logits = [query[row] @ positive[row]]
        logits += [query[row] @ queued[k] for k in range(3) if k != own]
        expected += np.log(np.exp(logits).sum()) - logits[0]
    np.testing.assert_allclose(source.extra_loss(batch).numpy(), expected, rtol=1e-5)
    for was, now in zip(before, source._tower.weights, strict=True):
        np.testing.assert_array_equal(was, now.numpy())
    assert not source.trainable_weights and not source._tower.trainable_weights


def test_rejects_a_momentum_outside_zero_one():
    with pytest.raises(ValueError, match="momentum"):
        MomentumQueueNegatives(size=4, dim=3, momentum=1.0)


def _model(sources, tower=None):
    """A two-tower model over `_tower()` (or `tower`) with these negative sources."""
    from trainer.model import TwoTowerModel
    from trainer.towers import QueryTower

    query = QueryTower(
        user_vocabulary=["u1"],
        item_ids=ITEMS,
        user_feature_vocabularies={},
        embedding_dim=4,
        hidden_units=[5],
        output_dim=3,
    )
    return TwoTowerModel(query, tower or _tower(), sources=sources, loss="softmax")


def test_model_trains_only_its_own_towers():
    features = {
        "user_id": tf.constant(["u1", "u1"]),
        "history": tf.constant([["i2"], ["i3"]]),
        "item_id": tf.constant(["i0", "i5"]),
    }
    plain, with_queue = _model([]), _model([MomentumQueueNegatives(size=4, dim=3)])
    for m in (plain, with_queue):
        m.compute_loss(features, training=True)
    assert len(with_queue.trainable_weights) == len(plain.trainable_weights)
    assert len(with_queue.weights) > len(plain.weights)  # the copy, its queue, its clock


def _intentions(tower, source, size=4):
    from trainer.negatives.intention_queue import IntentionQueueNegatives

    intentions = IntentionQueueNegatives(
        intentions=2, size=size, dim=3, category_dim=4, mode="momentum", seed=1
    )
    intentions.bind(tower)
    intentions.follow(source)
    return intentions


def test_momentum_intention_queues_cache_and_score_the_momentum_positives():
    tower = _tower()
    source = _source(tower, size=8)
    intentions = _intentions(tower, source)
    rng = np.random.default_rng(0)
    for weight in tower.weights:  # the trained tower moves away from its momentum copy
        weight.assign_add(tf.constant(rng.normal(0, 0.3, weight.shape), tf.float32))
    first = _batch(tower, ["i0", "i1", "i2", "i3", "i4"])
    for step in (source.extra_loss, intentions.extra_loss, source.update, intentions.update):
        step(first)
    momentum = source._tower(first.positive_ids).numpy()  # the copy after its first move
    trained = tower(first.positive_ids).numpy()
    assert not np.allclose(momentum, trained, atol=1e-3)
    which = intentions.intention(first.positive_ids).numpy()
    assert set(which) == {0, 1}  # both queues get items
    queued, valid = (t.numpy() for t in intentions._embeddings.all_contents())
    for h in (0, 1):
        np.testing.assert_allclose(queued[h][valid[h]], momentum[which == h], rtol=1e-6)

    second = _batch(tower, ["i1", "i5", "i2"], training=False)
    source.extra_loss(second)
    positive = source.encoded_positives.numpy()
    users = intentions.intention_vectors(second.query).numpy()
    own = intentions.intention(second.positive_ids).numpy()
    expected = 0.0
    for row, item in enumerate([1, 5, 2]):
        h = own[row]
        negatives = [momentum[k] for k in range(5) if which[k] == h and k != item]
        logits = [users[row, h] @ v for v in [positive[row], *negatives]]
        expected += np.log(np.exp(logits).sum()) - logits[0]
    with tf.GradientTape() as tape:
        loss = intentions.extra_loss(second)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    # Positive and negatives come from the copy: the loss trains the user side only.
    gradients = tape.gradient(loss, tower.trainable_weights + intentions.trainable_weights)
    assert all(g is None for g in gradients[: len(tower.trainable_weights)])
    assert all(g is not None for g in gradients[len(tower.trainable_weights) :])


def test_momentum_intention_queues_need_the_momentum_source():
    from trainer.negatives.intention_queue import IntentionQueueNegatives

    tower = _tower()
    unlinked = IntentionQueueNegatives(2, 4, 3, 4, mode="momentum")
    unlinked.bind(tower)
    with pytest.raises(ValueError, match="follow"):
        unlinked.extra_loss(_batch(tower, ["i0"]))
    with pytest.raises(ValueError, match="only a momentum-mode"):
        IntentionQueueNegatives(2, 4, 3, 4, mode="ids").follow(_source(tower))
    with pytest.raises(ValueError, match="mode must be one of"):
        IntentionQueueNegatives(2, 4, 3, 4, mode="momentums")
    intentions = IntentionQueueNegatives(2, 4, 3, 4, mode="momentum", name="intention_queues")
    with pytest.raises(ValueError, match="MomentumQueueNegatives source before them"):
        _model([intentions], tower)


def _weights_after_one_step(dataset_dir, strategy):
    """The model's weights after one step at learning rate 0: its initial weights."""
    from common.config import load_config
    from trainer.build import build_model
    from trainer.dataset import load_dataset, make_dataset
    from trainer.optimizers import make_optimizer

    overrides = ["model.hidden_units=[16]", "model.output_dim=8", "model.embedding_dim=8"]
    queue = ["negatives.queue_size=16", "negatives.queue_mode=momentum"]
    config = load_config(overrides=[*overrides, *queue])
    tf.keras.utils.set_random_seed(config.training.seed)
    dataset = load_dataset(dataset_dir)
    with strategy.scope():
        model = build_model(config, dataset)
        model.compile(optimizer=make_optimizer("adagrad", 0.0))
    options = {"features": model.input_features, "index": model.index_features}
    model.fit(make_dataset(dataset, "train", 8, **options).take(1), verbose=0)
    towers = (model.query_tower, model.candidate_tower)
    return [[w.numpy() for w in tower.trainable_weights] for tower in towers]


def test_a_strategy_builds_the_model_with_the_initial_weights_of_one_process(tiny_dataset):
    # `bind` builds the item towers in this thread; a strategy builds the query tower in
    # a replica thread, whose initializers drew the seeds this thread had drawn.
    alone = _weights_after_one_step(tiny_dataset, tf.distribute.get_strategy())
    mirrored = _weights_after_one_step(tiny_dataset, tf.distribute.MirroredStrategy(["/cpu:0"]))
    for tower, tower_alone in zip(mirrored, alone, strict=True):
        for weight, weight_alone in zip(tower, tower_alone, strict=True):
            np.testing.assert_array_equal(weight, weight_alone)
    query_kernels = [w for w in mirrored[0] if w.ndim == 2]
    item_kernels = [w for w in mirrored[1] if w.ndim == 2]
    for q in query_kernels:
        assert not any(q.shape == i.shape and np.array_equal(q, i) for i in item_kernels)
