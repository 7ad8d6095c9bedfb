"""The propensity heads recover the legacy system's own probabilities from subsampled
spaces, once every sampled item is weighted by the inverse of its sampling rate."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.negatives.candidates import Batch, Candidates
from trainer.propensity_network import PropensityNetwork

NUM_ITEMS, DIM = 200, 4
RNG = np.random.default_rng(0)
USERS = RNG.normal(size=(300, DIM)).astype(np.float32)
ITEMS = RNG.normal(size=(NUM_ITEMS, DIM)).astype(np.float32)
IDS = np.array([f"i{k}" for k in range(NUM_ITEMS)])


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def true_p1(u, v):  # P(recalled)
    return _sigmoid(2 * u[..., 0] * v[..., 0] - 2.5)


def true_p2(u, v):  # P(exposed | recalled)
    return _sigmoid(1.5 * u[..., 1] * v[..., 1] - 0.5)


def _rows(count, rng):
    """Requests of a legacy system with those propensities, cut into rows the way
    preprocessing does: one click (the positive), 1 of A, 4 of B, 20 of C."""
    rows = []
    while len(rows) < count:
        user = rng.integers(len(USERS))
        recalled = np.flatnonzero(rng.random(NUM_ITEMS) < true_p1(USERS[user], ITEMS))
        exposed = recalled[rng.random(recalled.size) < true_p2(USERS[user], ITEMS[recalled])]
        if exposed.size == 0:
            continue
        positive = rng.choice(exposed)
        space_a = np.setdiff1d(exposed, [positive])
        space_b = np.setdiff1d(recalled, exposed)
        space_c = np.setdiff1d(np.arange(NUM_ITEMS), recalled)
        kept = [
            rng.choice(s, size=min(n, s.size), replace=False)
            for s, n in ((space_a, 1), (space_b, 4), (space_c, 20))
        ]
        rows.append((user, positive, space_a.size, space_b.size, kept))
    return rows


def _group(name, rows, index, width):
    ids = np.full((len(rows), width), -1, dtype=np.int64)  # catalog indices, -1: padding
    for r, row in enumerate(rows):
        ids[r, : len(row[4][index])] = row[4][index]
    embeddings = np.zeros((len(rows), width, DIM), np.float32)
    for r, row in enumerate(rows):
        embeddings[r, : len(row[4][index])] = ITEMS[row[4][index]]
    return Candidates(name, name, tf.constant(ids), tf.constant(embeddings))


def _batch(rows):
    users = tf.constant(USERS[[r[0] for r in rows]])
    positive_ids = tf.constant([r[1] for r in rows], tf.int64)
    features = {
        "num_space_a": tf.constant([r[2] for r in rows], tf.int64),
        "num_space_b": tf.constant([r[3] for r in rows], tf.int64),
    }
    batch = Batch(
        features,
        users,
        positive_ids,
        tf.constant(ITEMS[[r[1] for r in rows]]),
        lambda ids: tf.zeros(tf.concat([tf.shape(ids), [DIM]], 0)),
        NUM_ITEMS,
        lambda ids: ids,
        True,
    )
    groups = {
        "A": _group("A", rows, 0, 1),
        "B": _group("B", rows, 1, 4),
        "C": _group("C", rows, 2, 20),
    }
    masks = {g: c.ids >= 0 for g, c in groups.items()}
    return batch, groups, masks


def _fit(network, steps=250):
    rng = np.random.default_rng(1)
    optimizer = tf.keras.optimizers.Adam(0.01)
    for _ in range(steps):
        batch, groups, masks = _batch(_rows(128, rng))
        with tf.GradientTape() as tape:
            loss_er, loss_re, _ = network(batch, groups, masks)
            loss = loss_er + loss_re
        variables = network.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))


@pytest.fixture(scope="module")
def trained():
    tf.keras.utils.set_random_seed(0)
    network = PropensityNetwork([32])
    _fit(network)
    return network


def test_the_heads_estimate_the_systems_own_probabilities(trained):
    users = USERS[RNG.integers(len(USERS), size=3000)]
    which = RNG.integers(NUM_ITEMS, size=3000)
    items = ITEMS[which]
    p1, p2 = trained.probabilities(tf.constant(users), tf.constant(items), tf.constant(IDS[which]))
    p1, p2 = p1.numpy(), p2.numpy()
    # 16% of the catalog is recalled, while a row holds ~6 recalled of ~26 sampled items:
    # fitted to the raw sample (weights all 1) the head says 0.23 on average, off by 0.08
    # per pair; weighted, it says 0.163, off by 0.011 (measured).
    assert true_p1(users, items).mean() == pytest.approx(0.162, abs=0.01)
    assert p1.mean() == pytest.approx(true_p1(users, items).mean(), abs=0.01)
    assert np.mean(np.abs(p1 - true_p1(users, items))) < 0.025
    assert np.corrcoef(p1, true_p1(users, items))[0, 1] > 0.98
    assert np.mean(np.abs(p2 - true_p2(users, items))) < 0.05
    assert np.corrcoef(p2, true_p2(users, items))[0, 1] > 0.95


def test_ipw_weights_follow_the_calibrated_propensities(trained):
    rows = _rows(64, np.random.default_rng(2))
    batch, groups, masks = _batch(rows)
    _, _, weights = trained(batch, groups, masks)
    p1, p2 = trained.probabilities(
        batch.query[:, tf.newaxis], groups["A"].embeddings, groups["A"].ids
    )
    expected_a = np.clip(1 / (p1.numpy() * p2.numpy()), 1, 20) * masks["A"].numpy()
    np.testing.assert_allclose(weights["A"].numpy(), expected_a, rtol=1e-4)
    assert set(weights) == {"A", "B"}


def test_weigh_positives_weights_each_click_by_its_own_propensity(trained):
    rows = _rows(64, np.random.default_rng(2))
    batch, groups, masks = _batch(rows)
    network = PropensityNetwork([32], weigh_positives=True)
    network(batch, groups, masks)
    network.set_weights(trained.get_weights())
    _, _, weights = network(batch, groups, masks)
    p1, p2 = trained.probabilities(batch.query, batch.positive, batch.positive_ids)
    expected = np.clip(1 / (p1.numpy() * p2.numpy()), 1, 20)
    np.testing.assert_allclose(weights["positive"].numpy(), expected, rtol=1e-4)
    assert set(weights) == {"A", "B", "positive"}
    assert network.get_config()["weigh_positives"] is True


def test_without_space_c_the_head_draws_its_own(trained):
    rows = _rows(8, np.random.default_rng(3))
    batch, groups, masks = _batch(rows)
    del groups["C"], masks["C"]
    loss_er, loss_re, weights = trained(batch, groups, masks)
    assert np.isfinite(loss_er.numpy()) and loss_er.numpy() > 0 and set(weights) == {"A", "B"}


@pytest.mark.parametrize("train_towers", [False, True])
def test_the_heads_reach_the_towers_only_when_asked(train_towers):
    rows = _rows(16, np.random.default_rng(4))
    batch, groups, masks = _batch(rows)
    network = PropensityNetwork([8], train_towers=train_towers)
    query = tf.Variable(batch.query)
    with tf.GradientTape() as tape:
        batch.query = tf.identity(query)
        loss_er, loss_re, _ = network(batch, groups, masks)
        loss = loss_er + loss_re
    gradient = tape.gradient(loss, query)
    assert (gradient is not None) == train_towers
    assert network.get_config()["train_towers"] is train_towers


def test_the_er_head_can_learn_from_the_first_k_space_c_draws(trained):
    """`head_space_c=k`: the ER loss is the one of the rows' first k Space C draws, each
    weighted by its own rate (4 kept of |C|: five times a draw of 20 kept)."""
    rows = _rows(32, np.random.default_rng(5))
    batch, groups, masks = _batch(rows)
    sliced = PropensityNetwork.from_config({**trained.get_config(), "head_space_c": 4})
    sliced(batch, groups, masks)  # builds its variables
    sliced.set_weights(trained.get_weights())
    cut = dict(groups)
    cut["C"] = Candidates("C", "C", groups["C"].ids[:, :4], groups["C"].embeddings[:, :4])
    cut_masks = {**masks, "C": masks["C"][:, :4]}
    expected = trained(batch, cut, cut_masks)
    got = sliced(batch, groups, masks)
    np.testing.assert_allclose(got[0].numpy(), expected[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(got[1].numpy(), expected[1].numpy(), rtol=1e-6)
    full = trained(batch, groups, masks)[0].numpy()
    assert abs(got[0].numpy() - full) > 1e-4  # fewer draws: another sample of the loss
    assert masks["C"].shape == (32, 20) and groups["C"].ids.shape == (32, 20)  # untouched


def test_config_round_trip():
    network = PropensityNetwork([8], max_weight=7.0, head_negatives=5, head_space_c=3, name="p")
    assert PropensityNetwork.from_config(network.get_config()).get_config() == network.get_config()


def test_the_heads_item_embedding_has_one_row_per_catalog_item():
    """Row i + 1 for catalog index i, row 0 for padding (-1): no two items share a row,
    as two in five did when the rows were hash buckets of the id strings."""
    network = PropensityNetwork([4], num_items=NUM_ITEMS, item_dim=3)
    network.bind(list(IDS))
    indices = tf.constant([[0, 5, 199, -1]], tf.int64)
    features = network._features(indices).numpy()[0]
    table = network.item_embedding.embeddings.numpy()
    assert table.shape == (NUM_ITEMS + 1, 3)
    np.testing.assert_array_equal(features, table[[1, 6, 200, 0]])
    assert np.unique(table, axis=0).shape[0] == NUM_ITEMS + 1  # every row its own
    with pytest.raises(TypeError, match="by catalog index.*item_index"):
        network._features(tf.constant(["i5"]))
    with pytest.raises(ValueError, match="200 catalog rows cannot serve a catalog of 3"):
        network.bind(["a", "b", "c"])
    assert PropensityNetwork.from_config(network.get_config()).get_config()["num_items"] == 200


def test_the_heads_use_the_items_exposure_rate():
    """A legacy recall that follows item popularity, which the item embeddings don't hold:
    only the head that sees each item's logged exposure rate can learn it."""
    from trainer.exposure import ExposurePropensity

    rng = np.random.default_rng(4)
    popularity = rng.normal(size=NUM_ITEMS)
    exposure = ExposurePropensity(IDS, np.round(50 * np.exp(popularity)).astype(int), 10_000)
    users = USERS[rng.integers(len(USERS), size=2000)]
    which = rng.integers(NUM_ITEMS, size=2000)

    def p1_of(users, which):
        return _sigmoid(2 * users[..., 0] * ITEMS[which][..., 0] + 2.5 * popularity[which] - 3)

    correlations = {}
    for name, feature in (("embeddings", None), ("exposure", exposure)):
        tf.keras.utils.set_random_seed(0)
        network = PropensityNetwork([32], item_exposure=feature)
        optimizer = tf.keras.optimizers.Adam(0.01)
        for _ in range(150):
            rows = rng.integers(len(USERS), size=128)
            items = rng.integers(NUM_ITEMS, size=(128, 8))
            labels = rng.random((128, 8)) < p1_of(USERS[rows][:, np.newaxis], items)
            with tf.GradientTape() as tape:
                logits = network._logits(
                    network.recall_head,
                    tf.constant(USERS[rows][:, np.newaxis]),
                    tf.constant(ITEMS[items]),
                    network._features(tf.constant(IDS[items])),
                )
                loss = tf.reduce_mean(
                    tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, tf.float32), logits)
                )
            variables = network.recall_head.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        p1, _ = network.probabilities(
            tf.constant(users), tf.constant(ITEMS[which]), tf.constant(IDS[which])
        )
        correlations[name] = np.corrcoef(p1.numpy(), p1_of(users, which))[0, 1]
    # measured: embeddings only 0.63, with the exposure rate 0.98
    assert correlations["exposure"] > 0.95 > 0.75 > correlations["embeddings"]
    clone = PropensityNetwork.from_config(
        PropensityNetwork([8], item_exposure=exposure).get_config()
    )
    assert clone.item_exposure.get_config() == exposure.get_config()


def _bce(logits, label):
    return np.maximum(logits, 0) - logits * label + np.log1p(np.exp(-np.abs(logits)))


@pytest.mark.parametrize("space_c", ["per_row", "drawn_by_the_head"])
def test_one_pass_per_head_gives_the_losses_and_weights_of_the_documented_terms(space_c):
    """Each head scores every row's click, A, B and C pairs in one pass (a C the head draws
    for the batch, `[n]`, in a pass of its own); the losses are the module docstring's,
    computed here group by group from the heads' own probabilities."""
    from trainer.exposure import ExposurePropensity

    rows = _rows(24, np.random.default_rng(6))
    batch, groups, masks = _batch(rows)
    exposure = ExposurePropensity(IDS[:50], np.arange(1, 51), 1000)
    tf.keras.utils.set_random_seed(3)
    network = PropensityNetwork(
        [8],
        item_exposure=exposure,
        num_items=NUM_ITEMS,
        item_dim=3,
        weigh_positives=True,
        head_negatives=3,
    )
    network.bind(list(IDS))
    given = dict(groups), dict(masks)
    if space_c == "drawn_by_the_head":
        del given[0]["C"], given[1]["C"]
        shared = Candidates(
            "own", "C", tf.constant([3, 70, 150], tf.int64), tf.constant(ITEMS[[3, 70, 150]])
        )
        network._own_space_c = lambda batch: shared
        groups["C"], masks["C"] = shared, tf.ones([24, 3], tf.bool)
    loss_er, loss_re, weights = network(batch, *given)

    def logits(head, items, ids):
        p1, p2 = network.probabilities(batch.query[:, tf.newaxis], items, ids)
        p = (p1 if head == "ER" else p2).numpy().astype(np.float64)
        return np.log(p / (1 - p))

    num_a = batch.features["num_space_a"].numpy()[:, None].astype(np.float64)
    num_b = batch.features["num_space_b"].numpy()[:, None].astype(np.float64)
    sizes = {"A": num_a, "B": num_b, "C": np.maximum(NUM_ITEMS - 1 - num_a - num_b, 1)}
    rate = {}
    for g in groups:
        mask = masks[g].numpy().astype(np.float64)
        rate[g] = mask * sizes[g] / np.maximum(mask.sum(1, keepdims=True), 1)

    def loss(head, labels):
        total = weight_sum = count = 0.0
        click = logits(head, batch.positive[:, tf.newaxis], batch.positive_ids[:, tf.newaxis])
        terms = [(click, 1.0, np.ones_like(click))]
        terms += [
            (logits(head, groups[g].embeddings, groups[g].ids), y, rate[g]) for g, y in labels
        ]
        for x, y, w in terms:
            total += (w * _bce(x, y)).sum()
            weight_sum, count = weight_sum + w.sum(), count + (w > 0).sum()
        return total * count / weight_sum

    assert loss_er.numpy() == pytest.approx(loss("ER", [("A", 1), ("B", 1), ("C", 0)]), rel=1e-4)
    assert loss_re.numpy() == pytest.approx(loss("RE", [("A", 1), ("B", 0)]), rel=1e-4)
    p1, p2 = network.probabilities(
        batch.query[:, tf.newaxis], groups["A"].embeddings, groups["A"].ids
    )
    expected_a = np.clip(1 / (p1.numpy() * p2.numpy()), 1, 20) * masks["A"].numpy()
    np.testing.assert_allclose(weights["A"].numpy(), expected_a, rtol=1e-4)
    p1, _ = network.probabilities(
        batch.query[:, tf.newaxis], groups["B"].embeddings, groups["B"].ids
    )
    expected_b = np.clip(1 / p1.numpy(), 1, 20) * masks["B"].numpy()
    np.testing.assert_allclose(weights["B"].numpy(), expected_b, rtol=1e-4)
    p1, p2 = network.probabilities(batch.query, batch.positive, batch.positive_ids)
    expected = np.clip(1 / (p1.numpy() * p2.numpy()), 1, 20)
    np.testing.assert_allclose(weights["positive"].numpy(), expected, rtol=1e-4)
    assert (masks["A"].numpy() == 0).any()  # padded slots are in the sample
