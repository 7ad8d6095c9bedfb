"""Losses over a positive and any set of negative candidates.

TFRS's `Retrieval` task scores one `[batch, n]` matrix of shared candidates; it cannot
take per-row negatives (UMA²'s spaces, cluster negatives), a different correction per
source, importance weights, or a binary cross-entropy, so these two losses are ours.
"""

import functools
import operator
from collections.abc import Callable

import tensorflow as tf

from trainer.negatives.candidates import Candidates

_MASKED = -1e9


def candidate_logits(query: tf.Tensor, candidates: Candidates, temperature: float) -> tf.Tensor:
    """`[batch_size, n]` scores of every row's query against the candidates."""
    query = query / temperature  # on [batch_size, dim]: cheaper than on the scores
    if candidates.shared:
        return tf.matmul(query, candidates.embeddings, transpose_b=True)
    return tf.einsum("bd,bnd->bn", query, candidates.embeddings)


def _real_slots(candidates: Candidates) -> tf.Tensor:
    """True (shaped like the ids) for slots that hold a candidate: not padding, valid."""
    real = candidates.ids >= 0
    if candidates.valid is not None:
        real = tf.logical_and(real, candidates.valid)
    return real


def _dropped(
    positive_ids: tf.Tensor, candidates: Candidates, remove_accidental_hits: bool
) -> tf.Tensor | None:
    """`[batch_size, n]` True where a candidate is the row's own positive (an accidental
    hit, or the diagonal of in-batch negatives); None when nothing is dropped."""
    ids = candidates.ids if not candidates.shared else candidates.ids[tf.newaxis]
    drop = None
    if remove_accidental_hits:
        drop = tf.equal(ids, tf.cast(positive_ids, ids.dtype)[:, tf.newaxis])
    if candidates.exclude_diagonal:
        size = tf.shape(candidates.ids)[0]
        diagonal = tf.eye(tf.shape(positive_ids)[0], size, dtype=tf.bool)
        drop = diagonal if drop is None else tf.logical_or(drop, diagonal)
    return drop


def candidate_mask(
    positive_ids: tf.Tensor, candidates: Candidates, remove_accidental_hits: bool
) -> tf.Tensor:
    """`[batch_size, n]` True where a candidate counts as a negative for the row.

    Ids are int64 catalog indices (-1: padding): an accidental hit is an integer match.
    """
    mask = _real_slots(candidates)
    if candidates.shared:
        mask = mask[tf.newaxis]
    drop = _dropped(positive_ids, candidates, remove_accidental_hits)
    if drop is not None:
        mask = tf.logical_and(mask, tf.logical_not(drop))
    return tf.broadcast_to(mask, [tf.shape(positive_ids)[0], tf.shape(mask)[1]])


@tf.custom_gradient
def _row_log_sum_exp(logits: tf.Tensor) -> tuple[tf.Tensor, Callable]:
    """`tf.reduce_logsumexp(logits, axis=1)` with a gradient that reuses the forward
    pass's exponentials in one `[batch_size, n]` multiply (TF's own gradient broadcasts
    the upstream gradient to `[batch_size, n]` first, one pass more)."""
    top = tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))
    top = tf.where(tf.math.is_finite(top), top, 0.0)
    exps = tf.exp(logits - top)
    sums = tf.reduce_sum(exps, axis=1, keepdims=True)

    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        return exps * (upstream[:, tf.newaxis] / sums)

    return tf.math.log(sums[:, 0]) + top[:, 0], gradient


def _sum(terms: list[tf.Tensor]) -> tf.Tensor:
    """The terms' sum, broadcast (`tf.add_n` wants equal shapes; a shared source's `[n]`
    weight times a per-row share is `[batch_size, n]`)."""
    return functools.reduce(operator.add, terms)


def _per_row(weight: tf.Tensor | None) -> bool:
    """Whether `weight` is one value per row (`[batch_size, 1]`)."""
    return weight is not None and weight.shape.rank == 2 and weight.shape[-1] == 1


def _negatives_log_sum_exp(
    query: tf.Tensor,
    positive_ids: tf.Tensor,
    candidates: Candidates,
    temperature: float,
    remove_accidental_hits: bool,
) -> tf.Tensor:
    """`[batch_size]` log Σ exp(logit) over each row's kept negatives of one source.

    Each [batch_size, n] pass costs about a millisecond on 2 CPU cores at a 5,120-item
    queue, so the corrections are summed where they are small first: shared candidates'
    log q, log propensity, weights and padding become one `[n]` bias; a per-row weight
    is added to the row's sum; only the accidental hits and the diagonal are masked on
    the whole matrix.
    """
    logits = candidate_logits(query, candidates, temperature)
    bias = []
    if candidates.log_q is not None:
        bias.append(-candidates.log_q)
    if candidates.log_propensity is not None:
        bias.append(candidates.log_propensity)
    weight = candidates.weight
    if weight is not None and not _per_row(weight):
        bias.append(tf.math.log(tf.maximum(weight, 1e-12)))
    if candidates.shared:  # padding in the [n] bias; only the drops are [batch_size, n]
        bias = _sum(bias) if bias else tf.zeros_like(candidates.ids, logits.dtype)
        logits += tf.where(_real_slots(candidates), bias, _MASKED)
        drop = _dropped(positive_ids, candidates, remove_accidental_hits)
        if drop is not None:
            logits = tf.where(drop, _MASKED, logits)
    else:
        if bias:
            logits += _sum(bias)
        mask = candidate_mask(positive_ids, candidates, remove_accidental_hits)
        logits = tf.where(mask, logits, _MASKED)
    log_sum = _row_log_sum_exp(logits)
    if _per_row(weight):
        log_sum += tf.math.log(tf.maximum(weight[:, 0], 1e-12))
    return log_sum


def softmax_loss(
    query: tf.Tensor,
    positive: tf.Tensor,
    positive_ids: tf.Tensor,
    positive_log_q: tf.Tensor | None,
    sources: list[Candidates],
    temperature: float = 1.0,
    remove_accidental_hits: bool = True,
    positive_log_propensity: tf.Tensor | None = None,
) -> tf.Tensor:
    """Sampled softmax: the positive against all sources' negatives, per row.

    Each negative's logit is `s / temperature - log_q + log_propensity + log(weight)`;
    the positive's `s / temperature - log_q + log_propensity`; masked negatives drop out.
    Returns `[batch_size]` losses (−log softmax of the positive).

    Each source's negatives are summed on their own and the sums joined, so the
    `[batch_size, n]` matrices are never concatenated.
    """
    positive_logit = tf.reduce_sum((query / temperature) * positive, axis=1)
    if positive_log_q is not None:
        positive_logit -= positive_log_q
    if positive_log_propensity is not None:
        positive_logit += positive_log_propensity
    sums = [positive_logit]
    for candidates in sources:
        sums.append(
            _negatives_log_sum_exp(
                query, positive_ids, candidates, temperature, remove_accidental_hits
            )
        )
    return tf.reduce_logsumexp(tf.stack(sums, axis=1), axis=1) - positive_logit


def bce_loss(
    query: tf.Tensor,
    positive: tf.Tensor,
    positive_ids: tf.Tensor,
    sources: list[Candidates],
    lambdas: dict[str, float],
    temperature: float = 1.0,
    remove_accidental_hits: bool = True,
    positive_log_propensity: tf.Tensor | None = None,
    positive_weight: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Binary cross-entropy: the positive as 1 (times `positive_weight`), each negative
    as 0 times its weight.

    With exposure propensities every logit is `s / temperature + log_propensity`: the
    probability of a logged click is modelled as σ(s + log π) ≈ π · e^s.

    Returns:
      {"positive": [batch_size], "<group>": [batch_size] ...}: per-row loss terms, each
      negative group already multiplied by `lambdas[group]` (default 1).
    """
    positive_logit = tf.reduce_sum(query * positive, axis=1) / temperature
    if positive_log_propensity is not None:
        positive_logit += positive_log_propensity
    terms = {"positive": tf.nn.softplus(-positive_logit)}  # −log σ(s)
    if positive_weight is not None:  # `[batch_size]` IPW weights of the clicks
        terms["positive"] *= positive_weight
    for candidates in sources:
        logits = candidate_logits(query, candidates, temperature)
        if candidates.log_propensity is not None:
            logits += candidates.log_propensity
        mask = tf.cast(
            candidate_mask(positive_ids, candidates, remove_accidental_hits), logits.dtype
        )
        per_negative = tf.nn.softplus(logits) * mask  # −log(1 − σ(s))
        if candidates.weight is not None:
            per_negative *= candidates.weight
        term = lambdas.get(candidates.group, 1.0) * tf.reduce_sum(per_negative, axis=1)
        terms[candidates.group] = terms.get(candidates.group, 0.0) + term
    return terms


def share_denominator(
    positive_ids: tf.Tensor,
    sources: list[Candidates],
    space_sizes: dict[str, tf.Tensor],
    remove_accidental_hits: bool = True,
) -> None:
    """Softmax with UMA²'s Space A/B negatives: one estimate of the denominator.

    The other negatives, corrected by logQ, already estimate the sum of exp(logit) over
    the catalog. A row's k kept Space A items are a second estimate of it, each standing
    for |A| / (k · P(i in A)) items: the space's sampling rate times the IPW weight
    1/(p1·p2) the heads set (Space B: 1/p1; no heads: weight 1). Adding the two sums
    counts the catalog twice and, worse, counts each exposed item 1/p times over, which
    pushes down exactly the items the legacy system found relevant (the bench measured
    that form at 0.44 of the oracle against the default's 0.62). So the two estimates are
    averaged, weighted by sample count: λ_g = k_g / (n + Σ k) for each logged group, and
    1 − Σ λ for the n other negatives of the row. Sets each source's `weight` in place.

    Args:
      positive_ids: `[batch_size]` clicked items (catalog indices).
      sources: every source's candidates; groups "A" and "B" are the logged spaces.
      space_sizes: group -> `[batch_size]` the size of that space in each row's request.
      remove_accidental_hits: as in `softmax_loss` (a masked slot is not a sample).
    """
    logged = [c for c in sources if c.group in space_sizes]
    if not logged:
        return
    others = [c for c in sources if c.group not in space_sizes]
    kept = [
        tf.reduce_sum(
            tf.cast(candidate_mask(positive_ids, c, remove_accidental_hits), tf.float32),
            axis=1,
            keepdims=True,
        )
        for c in logged
    ]
    num_others = tf.add_n([tf.cast(tf.shape(c.ids)[-1], tf.float32) for c in others] + [0.0])
    total = tf.maximum(num_others + tf.add_n(kept), 1.0)  # [batch_size, 1]
    for c in logged:
        size = tf.cast(space_sizes[c.group], tf.float32)[:, tf.newaxis]
        ipw = c.weight if c.weight is not None else tf.ones_like(size)
        c.weight = tf.stop_gradient(ipw * size / total)  # λ_g · |A| / (k · P(i in A))
    share = tf.stop_gradient(num_others / total)  # [batch_size, 1]: broadcasts over columns
    for c in others:
        c.weight = share if c.weight is None else c.weight * share
