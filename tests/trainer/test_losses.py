import numpy as np
import tensorflow as tf

from trainer.losses import bce_loss, candidate_mask, share_denominator, softmax_loss
from trainer.negatives.candidates import Candidates

QUERY = tf.constant([[1.0, 0.0], [0.0, 2.0]])
POSITIVE = tf.constant([[2.0, 0.0], [0.0, 1.0]])  # positive scores: 2 and 2
_INDEX = {"": -1, "p": 0, "q": 1, "n": 2, "n1": 3, "n2": 4, "z": 5, "a1": 6}


def _ids(ids):
    """Item names as the catalog indices the losses take (-1: padding)."""
    return tf.constant(np.vectorize(_INDEX.get, otypes=[np.int64])(np.array(ids)))


POSITIVE_IDS = _ids(["p", "q"])


def _shared(ids, embeddings, **kwargs):
    return Candidates(
        "s",
        kwargs.pop("group", "other"),
        _ids(ids),
        tf.constant(embeddings, tf.float32),
        **kwargs,
    )


def test_softmax_with_shared_negatives_and_log_q():
    negatives = _shared(
        ["n1", "n2"], [[1.0, 0.0], [0.0, 1.0]], log_q=tf.constant(np.log([2.0, 0.5]), tf.float32)
    )
    loss = softmax_loss(QUERY, POSITIVE, POSITIVE_IDS, tf.constant([0.0, 0.0]), [negatives])
    # row 0: logits [2, 1 - log 2, 0 - log 0.5]; row 1: [2, 0 - log 2, 2 - log 0.5]
    rows = [[2, 1 - np.log(2), np.log(2)], [2, -np.log(2), 2 + np.log(2)]]
    expected = [np.log(np.exp(r).sum()) - 2 for r in rows]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_softmax_masks_padding_accidental_hits_and_the_diagonal():
    in_batch = _shared(["p", "q"], [[2.0, 0.0], [0.0, 1.0]], exclude_diagonal=True)
    per_row = Candidates(
        "r",
        "other",
        _ids([["q", ""], ["q", "z"]]),
        tf.constant([[[0, 1], [5, 5]], [[0, 1], [0, 3]]], tf.float32),
    )
    loss = softmax_loss(QUERY, POSITIVE, POSITIVE_IDS, None, [in_batch, per_row])
    # row 0: positive 2; in-batch "q" scores 0; per-row "q" scores 0, "" is padding.
    # row 1: positive 2; in-batch "p" scores 0; per-row "q" is its own positive (masked),
    #        "z" scores 6.
    expected = [np.log(np.exp(2) + 2) - 2, np.log(np.exp(2) + 1 + np.exp(6)) - 2]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_softmax_weight_adds_log_weight_and_temperature_divides():
    negatives = _shared(["n1"], [[1.0, 1.0]], weight=tf.constant([3.0]))
    loss = softmax_loss(QUERY, POSITIVE, POSITIVE_IDS, None, [negatives], temperature=0.5)
    # row 0: positive 2/0.5 = 4, negative 1/0.5 + log 3; row 1: 4 and 4 + log 3
    expected = [np.log(np.exp(4) + 3 * np.exp(2)) - 4, np.log(np.exp(4) + 3 * np.exp(4)) - 4]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_bce_terms_weights_and_lambdas():
    a = Candidates(
        "a",
        "A",
        _ids([["n1"], ["p"]]),
        tf.constant([[[1.0, 0]], [[0, 0]]]),
        weight=tf.constant([[2.0], [5.0]]),
    )
    c = _shared(["n2"], [[0.0, 0.0]], group="C")
    terms = bce_loss(QUERY, POSITIVE, _ids(["p", "q"]), [a, c], {"A": 0.5, "C": 3.0})
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    # positive: -log σ(2) per row = softplus(-2)
    np.testing.assert_allclose(terms["positive"].numpy(), [softplus(-2)] * 2, rtol=1e-6)
    # A: row 0 negative score 1, weight 2, λ 0.5; row 1 "p" is no accidental hit for "q"
    # (score 0, weight 5): 0.5 * [2 softplus(1), 5 softplus(0)]
    np.testing.assert_allclose(terms["A"].numpy(), [softplus(1), 2.5 * np.log(2)], rtol=1e-6)
    # C: score 0 for both rows, λ 3
    np.testing.assert_allclose(terms["C"].numpy(), [3 * np.log(2)] * 2, rtol=1e-6)


def test_candidate_mask_combines_valid_and_accidental_hits():
    candidates = Candidates(
        "x",
        "other",
        _ids(["p", "n", "q"]),
        tf.zeros([3, 2]),
        valid=tf.constant([True, True, False]),
    )
    mask = candidate_mask(POSITIVE_IDS, candidates, remove_accidental_hits=True)
    np.testing.assert_array_equal(mask.numpy(), [[False, True, False], [True, True, False]])


def test_exposure_propensity_is_added_to_every_logit():
    log_pi = np.log([0.5, 0.01])
    negatives = _shared(
        ["n1", "n2"], [[1.0, 0.0], [0.0, 1.0]], log_propensity=tf.constant(log_pi, tf.float32)
    )
    positive_log_pi = tf.constant(np.log([0.25, 1.0]), tf.float32)
    loss = softmax_loss(
        QUERY, POSITIVE, POSITIVE_IDS, None, [negatives], positive_log_propensity=positive_log_pi
    )
    # row 0: positive 2 + log .25, negatives 1 + log .5, 0 + log .01
    # row 1: positive 2 + log 1,   negatives 0 + log .5, 2 + log .01
    rows = [[2 + np.log(0.25), 1 + np.log(0.5), np.log(0.01)], [2, np.log(0.5), 2 + np.log(0.01)]]
    expected = [np.log(np.exp(r).sum()) - r[0] for r in rows]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
    # BCE models a logged click as σ(s + log π): positive softplus(-(s + log π)).
    terms = bce_loss(
        QUERY, POSITIVE, POSITIVE_IDS, [negatives], {}, positive_log_propensity=positive_log_pi
    )
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    np.testing.assert_allclose(
        terms["positive"].numpy(), [softplus(-(2 + np.log(0.25))), softplus(-2)], rtol=1e-6
    )
    np.testing.assert_allclose(
        terms["other"].numpy(),
        [
            softplus(1 + np.log(0.5)) + softplus(np.log(0.01)),
            softplus(np.log(0.5)) + softplus(2 + np.log(0.01)),
        ],
        rtol=1e-6,
    )


def test_positive_weight_multiplies_the_click_term():
    terms = bce_loss(QUERY, POSITIVE, POSITIVE_IDS, [], {}, positive_weight=tf.constant([1.0, 4.0]))
    softplus_minus_2 = np.log1p(np.exp(-2.0))
    np.testing.assert_allclose(terms["positive"].numpy(), [softplus_minus_2, 4 * softplus_minus_2])


def test_share_denominator_averages_the_logged_and_the_sampled_estimates():
    in_batch = _shared(["p", "q", "n"], [[0.0, 0.0]] * 3, exclude_diagonal=True)
    # Space A: row 0 keeps one item (IPW 2) of a space of 10; row 1's slot is padding.
    space_a = Candidates(
        "a",
        "A",
        _ids([["a1"], [""]]),
        tf.zeros([2, 1, 2]),
        weight=tf.constant([[2.0], [0.0]]),
        valid=tf.constant([[True], [False]]),
    )
    share_denominator(POSITIVE_IDS, [in_batch, space_a], {"A": tf.constant([10, 7])})
    # row 0: 3 other columns + 1 kept -> λ_A = 1/4; the A item stands for 10 / (1 · 1/2)
    # items, weighted 1/4: 2 · 10 / 4 = 5; the in-batch columns 3/4. Row 1 keeps none.
    np.testing.assert_allclose(space_a.weight.numpy(), [[5.0], [0.0]])
    np.testing.assert_allclose(in_batch.weight.numpy(), [[0.75], [1.0]])
    loss = softmax_loss(QUERY, POSITIVE, POSITIVE_IDS, None, [in_batch, space_a])
    # row 0: positive 2; in-batch "q", "n" score 0 (weight 3/4); "a1" scores 0 (weight 5).
    expected_row_0 = np.log(np.exp(2) + 2 * 0.75 + 5) - 2
    np.testing.assert_allclose(loss.numpy()[0], expected_row_0, rtol=1e-6)


def test_share_denominator_leaves_sources_alone_without_logged_spaces():
    in_batch = _shared(["p", "q"], [[0.0, 0.0]] * 2)
    share_denominator(POSITIVE_IDS, [in_batch], {"A": tf.constant([3, 3])})
    assert in_batch.weight is None


def _dense_softmax_reference(query, positive, positive_ids, positive_log_q, sources, temperature):
    """The sampled softmax written plainly: every source's [batch, n] logits, corrected,
    masked and concatenated, then one log-softmax (what `softmax_loss` computes faster)."""
    positive_logit = tf.reduce_sum(query * positive, axis=1) / temperature - positive_log_q
    columns = [positive_logit[:, tf.newaxis]]
    for c in sources:
        if c.shared:
            logits = tf.matmul(query, c.embeddings, transpose_b=True) / temperature
        else:
            logits = tf.einsum("bd,bnd->bn", query, c.embeddings) / temperature
        for term in (c.log_q, c.log_propensity):
            if term is not None:
                logits += (-1 if term is c.log_q else 1) * term
        if c.weight is not None:
            logits += tf.math.log(tf.maximum(c.weight, 1e-12))
        mask = candidate_mask(positive_ids, c, remove_accidental_hits=True)
        columns.append(tf.where(mask, logits, -1e9))
    logits = tf.concat(columns, axis=1)
    return tf.reduce_logsumexp(logits, axis=1) - logits[:, 0]


def test_softmax_matches_the_dense_formula_and_its_gradients():
    rng = np.random.default_rng(7)
    batch, dim = 6, 4
    query = tf.Variable(rng.normal(size=(batch, dim)).astype(np.float32))
    positive = tf.Variable(rng.normal(size=(batch, dim)).astype(np.float32))
    positive_ids = tf.constant([0, 1, 2, 0, 3, 4], tf.int64)  # item 0 twice
    queue_emb = tf.Variable(rng.normal(size=(5, dim)).astype(np.float32))
    row_emb = tf.Variable(rng.normal(size=(batch, 3, dim)).astype(np.float32))

    rng_log_q = rng.normal(size=batch)
    row_log_q, row_weight = rng.normal(size=(batch, 3)), rng.uniform(0.5, 2, size=(batch, 3))

    def sources():
        return [
            # in-batch: diagonal, a duplicate positive (rows 0 and 3), log q per column,
            # one weight per row (as share_denominator sets it)
            Candidates(
                "in_batch",
                "other",
                positive_ids,
                positive,
                log_q=tf.constant(rng_log_q, tf.float32),
                weight=tf.constant([[0.5], [1.0], [0.25], [1.0], [2.0], [1e-20]]),
                exclude_diagonal=True,
            ),
            # a queue: padding (-1), an invalid slot, an accidental hit (item 2), a weight
            # and a propensity per column
            Candidates(
                "queue",
                "other",
                tf.constant([2, 7, -1, 8, 9], tf.int64),
                queue_emb,
                log_propensity=tf.constant(np.log([0.5, 0.1, 0.2, 0.9, 0.3]), tf.float32),
                # a weight per column times one per row (share_denominator's product)
                weight=tf.constant([1.0, 3.0, 1.0, 0.5, 2.0])
                * tf.constant([[1.0], [2.0], [0.5], [1.0], [1.0], [3.0]]),
                valid=tf.constant([True, True, True, False, True]),
            ),
            # per row: padding, a hit on the row's own positive, per-slot log q and weights
            Candidates(
                "per_row",
                "A",
                tf.constant(
                    [[5, -1, 0], [1, 6, 7], [8, 9, 5], [5, 6, 7], [3, -1, -1], [6, 7, 8]], tf.int64
                ),
                row_emb,
                log_q=tf.constant(row_log_q, tf.float32),
                weight=tf.constant(row_weight, tf.float32),
            ),
        ]

    positive_log_q = tf.constant(rng.normal(size=batch), tf.float32)
    variables = [query, positive, queue_emb, row_emb]
    results = []
    for loss_fn in (softmax_loss, _dense_softmax_reference):
        with tf.GradientTape() as tape:
            loss = loss_fn(query, positive, positive_ids, positive_log_q, sources(), 0.3)
            total = tf.reduce_sum(loss)
        results.append((loss.numpy(), tape.gradient(total, variables)))
    (loss, gradients), (expected, expected_gradients) = results
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert np.all(loss > 0)
    for gradient, expected_gradient in zip(gradients, expected_gradients, strict=True):
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-6)
