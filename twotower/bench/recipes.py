"""The recipes `twotower bench debias` compares: names -> `--set` overrides.

Plain data (no TensorFlow), so that the command line can list them in `--help`.
"""

_CLREC = ["model.similarity=cosine", "negatives.temperature=0.07"]


def _queue(size: int) -> list[str]:
    """A CLRec queue of `size` items; the in-batch part then goes without logQ."""
    return [f"negatives.queue_size={size}", "negatives.in_batch_correction=none"]


_QUEUE = _queue(5120)  # 10x the batch
_NO_EXPOSURE = ["negatives.exposure_correction=none"]
# Extra negatives beyond the batch (uniform, same-cluster) bring the loss closer to the full
# softmax over the logged clicks, which learns the legacy system's exposure unless that is
# divided out in full; at the default's half strength they lost (docs/negatives.md).
_FULL_EXPOSURE = ["negatives.exposure_strength=1"]
_CLUSTER = ["negatives.cluster=15", "negatives.cluster_random=1", *_FULL_EXPOSURE]
_SPACES_AB = ["negatives.space_a=1", "negatives.space_b=4"]

# Name -> config overrides on top of the defaults (batch 512; in-batch negatives with
# static logQ and half the exposure divided out). "default" is `twotower train` with no
# --set; the others change one thing each, except the baselines marked so.
RECIPES: dict[str, list[str]] = {
    "default": [],
    "exposure_full": _FULL_EXPOSURE,
    "static_logq": _NO_EXPOSURE,  # the default before the exposure correction
    "tfrs": ["negatives.loss=tfrs", "negatives.in_batch_correction=none", *_NO_EXPOSURE],
    "in_batch": ["negatives.in_batch_correction=none"],
    "mixed": ["negatives.corpus=512", *_FULL_EXPOSURE],
    "clrec_ids": [*_CLREC, *_QUEUE, "negatives.queue_mode=ids"],
    "clrec_cached": [*_CLREC, *_QUEUE, "negatives.queue_mode=embeddings"],
    "clrec_momentum": [*_CLREC, *_QUEUE, "negatives.queue_mode=momentum"],
    # The same with a queue of 2x the batch: on CPUs the [batch x queue] scores are the cost.
    "clrec_momentum_1024": [*_CLREC, *_queue(1024), "negatives.queue_mode=momentum"],
    "multi_clrec": [*_CLREC, *_QUEUE, "negatives.queue_mode=ids", "negatives.intentions=4"],
    # Multi-CLRec on the momentum queue: its intention queues cache the momentum tower's
    # embeddings too (docs/negatives.md).
    "multi_clrec_momentum_1024": [
        *_CLREC,
        *_queue(1024),
        "negatives.queue_mode=momentum",
        "negatives.intentions=4",
    ],
    "cluster": _CLUSTER,
    "cluster_skip": [*_CLUSTER, "negatives.cluster_skip=true"],
    "ss_abc_random": ["uma2.strategy=SS-ABC-random"],
    "ss_abc_fixed": ["uma2.strategy=SS-ABC-fixed"],
    "uma2": ["uma2.strategy=UMA2"],
    # The preset with its cheaper Space C: each row's draws from a pool of 512 items a
    # step, the Entire->Recall head on 4 of them (docs/uma2.md).
    "uma2_pool": ["uma2.strategy=UMA2", "negatives.space_c_pool=512", "uma2.head_space_c=4"],
    # UMA²'s Space A/B negatives in the default's softmax: with the heads' IPW weights
    # (self-normalised), and with none (each kept item stands for |A|/k of its space).
    "softmax_uma2_ab": [*_SPACES_AB, "uma2.propensity=true", "uma2.self_normalize=true"],
    "softmax_ab": _SPACES_AB,
}
