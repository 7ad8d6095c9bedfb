"""Losses over a positive and any set of negative candidates.

TFRS's `Retrieval` task scores one `[batch, n]` matrix of shared candidates; it cannot
take per-row negatives (UMA²'s spaces, cluster negatives), a different correction per
source, importance weights, or a binary cross-entropy, so these two losses are ours.
"""

import tensorflow as tf

from trainer.negatives.candidates import Candidates

_MASKED = -1e9


def candidate_logits(query: tf.Tensor, candidates: Candidates, temperature: float) -> tf.Tensor:
    """`[batch_size, n]` scores of every row's query against the candidates."""
    if candidates.shared:
        scores = tf.matmul(query, candidates.embeddings, transpose_b=True)
    else:
        scores = tf.einsum("bd,bnd->bn", query, candidates.embeddings)
    return scores / temperature


def _fingerprint(ids: tf.Tensor) -> tf.Tensor:
    # Comparing [batch, n] strings dominated the step time with a 10×-batch queue; 62-bit
    # hashes compare as integers (a collision would only mask one negative).
    return tf.strings.to_hash_bucket_fast(ids, 2**62)


def candidate_mask(
    positive_ids: tf.Tensor, candidates: Candidates, remove_accidental_hits: bool
) -> tf.Tensor:
    """`[batch_size, n]` True where a candidate counts as a negative for the row."""
    batch = tf.shape(positive_ids)[0]
    ids = candidates.ids if not candidates.shared else tf.expand_dims(candidates.ids, 0)
    mask = tf.not_equal(ids, "")
    if remove_accidental_hits:
        same = tf.equal(_fingerprint(ids), tf.expand_dims(_fingerprint(positive_ids), 1))
        mask = tf.logical_and(mask, tf.logical_not(same))
    if candidates.valid is not None:
        valid = candidates.valid if not candidates.shared else candidates.valid[tf.newaxis]
        mask = tf.logical_and(mask, valid)
    if candidates.exclude_diagonal:
        size = tf.shape(candidates.ids)[0]
        mask = tf.logical_and(mask, tf.logical_not(tf.eye(batch, size, dtype=tf.bool)))
    return tf.broadcast_to(mask, [batch, tf.shape(mask)[1]])


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
    """
    positive_logit = tf.reduce_sum(query * positive, axis=1) / temperature
    if positive_log_q is not None:
        positive_logit -= positive_log_q
    if positive_log_propensity is not None:
        positive_logit += positive_log_propensity
    columns = [positive_logit[:, tf.newaxis]]
    for candidates in sources:
        logits = candidate_logits(query, candidates, temperature)
        if candidates.log_q is not None:
            logits -= candidates.log_q  # [n] broadcasts over rows
        if candidates.log_propensity is not None:
            logits += candidates.log_propensity
        if candidates.weight is not None:
            logits += tf.math.log(tf.maximum(candidates.weight, 1e-12))
        mask = candidate_mask(positive_ids, candidates, remove_accidental_hits)
        columns.append(tf.where(mask, logits, _MASKED))
    logits = tf.concat(columns, axis=1)
    return tf.reduce_logsumexp(logits, axis=1) - logits[:, 0]


def bce_loss(
    query: tf.Tensor,
    positive: tf.Tensor,
    positive_ids: tf.Tensor,
    sources: list[Candidates],
    lambdas: dict[str, float],
    temperature: float = 1.0,
    remove_accidental_hits: bool = True,
    positive_log_propensity: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Binary cross-entropy: the positive as 1, each negative as 0 times its weight.

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
