import numpy as np
import tensorflow as tf

from trainer.propensity import PropensityHead, ipw_weights


def test_ipw_weights_clip_mask_and_stop_gradient():
    p1 = tf.constant([[0.5, 0.01, 1e-30]])
    p2 = tf.constant([[0.5, 0.5, 0.0]])
    valid = tf.constant([[True, True, False]])
    with tf.GradientTape() as tape:
        tape.watch(p1)
        weights = ipw_weights(p1, p2, max_weight=20.0, valid=valid)
    # 1/(0.5*0.5) = 4; 1/(0.01*0.5) = 200 -> clipped to 20; invalid -> 0 (no NaN from p = 0)
    np.testing.assert_allclose(weights.numpy(), [[4.0, 20.0, 0.0]])
    assert tape.gradient(weights, p1) is None
    b_only = ipw_weights(tf.constant([[0.8, 0.25]]), None, 20.0, tf.constant([[True, True]]))
    np.testing.assert_allclose(b_only.numpy(), [[1.25, 4.0]])  # 1/p1, lower clip 1


def test_self_normalised_weights_average_one():
    weights = ipw_weights(
        tf.constant([[0.5, 0.25, 0.1]]),
        None,
        100.0,
        tf.constant([[True, True, False]]),
        self_normalize=True,
    )
    # raw [2, 4, 0] over valid mean 3 -> [2/3, 4/3, 0]
    np.testing.assert_allclose(weights.numpy(), [[2 / 3, 4 / 3, 0.0]], rtol=1e-6)


def test_tiny_propensities_give_finite_weights():
    weights = ipw_weights(
        tf.constant([[0.0, 1e-40]]), tf.constant([[0.0, 0.0]]), 50.0, tf.constant([[True, True]])
    )
    np.testing.assert_allclose(weights.numpy(), [[50.0, 50.0]])


def test_head_learns_a_known_propensity():
    # Synthetic users/items: the true P(recalled) = sigmoid(3 * u0 * v0 - 1).
    rng = np.random.default_rng(0)
    propensity = lambda u, v: 1 / (1 + np.exp(-(3 * u[:, 0] * v[:, 0] - 1)))  # noqa: E731
    users = rng.normal(size=(20000, 4)).astype(np.float32)
    items = rng.normal(size=(20000, 4)).astype(np.float32)
    labels = (rng.random(20000) < propensity(users, items)).astype(np.float32)
    tf.keras.utils.set_random_seed(0)
    head = PropensityHead([32])
    optimizer = tf.keras.optimizers.Adam(0.01)
    for _ in range(300):
        with tf.GradientTape() as tape:
            logits = head(tf.constant(users), tf.constant(items))
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
        optimizer.apply_gradients(
            zip(
                tape.gradient(loss, head.trainable_variables), head.trainable_variables, strict=True
            )
        )
    # Judged on fresh pairs, against the true propensity (not the sampled labels).
    test_users = rng.normal(size=(2000, 4)).astype(np.float32)
    test_items = rng.normal(size=(2000, 4)).astype(np.float32)
    truth = propensity(test_users, test_items)
    predicted = tf.sigmoid(head(tf.constant(test_users), tf.constant(test_items))).numpy()
    assert np.mean(np.abs(predicted - truth)) < 0.06
    assert np.corrcoef(predicted, truth)[0, 1] > 0.95


def test_head_config_round_trip():
    head = PropensityHead([8, 4], name="h")
    clone = PropensityHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()


def test_head_under_mixed_precision_takes_float32_and_returns_it():
    # training.mixed_precision: Keras casts only a layer's first input to float16, and
    # the losses and IPW weights downstream are float32 (UMA² crashed on both).
    users, items = tf.random.normal([3, 1, 4], seed=1), tf.random.normal([3, 2, 4], seed=2)
    features = tf.random.normal([3, 2, 2], seed=3)
    tf.keras.utils.set_random_seed(0)
    plain = PropensityHead([8])(users, items, features)
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        tf.keras.utils.set_random_seed(0)
        mixed = PropensityHead([8])(users, items, features)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert mixed.dtype == tf.float32 and mixed.shape == [3, 2]
    np.testing.assert_allclose(mixed.numpy(), plain.numpy(), atol=0.02)


def test_head_is_an_mlp_over_the_concatenated_pair():
    """The head computes its first layer block by block (a user's block once per row);
    that is the Dense layer over [u, v, u·v, f] of every (row, candidate) pair."""
    users, items = tf.random.normal([3, 1, 4], seed=1), tf.random.normal([3, 5, 4], seed=2)
    features = tf.random.normal([3, 5, 2], seed=3)
    head = PropensityHead([6, 3])
    got = head(users, items, features).numpy()
    (w1, b1), (w2, b2), (w3, b3) = [layer.get_weights() for layer in head._layers]
    u, v = np.broadcast_to(users.numpy(), items.shape), items.numpy()
    x = np.concatenate([u, v, u * v, features.numpy()], -1)
    x = np.maximum(x @ w1 + b1, 0)
    x = np.maximum(x @ w2 + b2, 0)
    np.testing.assert_allclose(got, (x @ w3 + b3)[..., 0], rtol=1e-5, atol=1e-5)
    # The kernel a Dense call would build: its shape and its name (checkpoints, weights).
    assert w1.shape == (3 * 4 + 2, 6)
    first = head._layers[0]
    assert first.kernel.name == f"{head.name}/{first.name}/kernel:0"
    shared = head(users, items[0], features[0]).numpy()  # `[n]` candidates meet every row
    np.testing.assert_allclose(shared[0], got[0], rtol=1e-5, atol=1e-5)
