"""The recipes `twotower bench debias` compares: names -> `--set` overrides.

Plain data (no TensorFlow), so that the command line can list them in `--help`.
"""

_CLREC = ["model.similarity=cosine", "negatives.temperature=0.07"]
_QUEUE = ["negatives.queue_size=5120", "negatives.in_batch_correction=none"]
_NO_EXPOSURE = ["negatives.exposure_correction=none"]

# Name -> config overrides on top of the defaults (batch 512; in-batch negatives with
# static logQ and half the exposure divided out). "default" is `twotower train` with no
# --set; the others change one thing each, except the baselines marked so.
RECIPES: dict[str, list[str]] = {
    "default": [],
    "exposure_full": ["negatives.exposure_strength=1"],
    "static_logq": _NO_EXPOSURE,  # the default before the exposure correction
    "tfrs": ["negatives.loss=tfrs", "negatives.in_batch_correction=none", *_NO_EXPOSURE],
    "in_batch": ["negatives.in_batch_correction=none"],
    "mixed": ["negatives.corpus=512"],
    "clrec_ids": [*_CLREC, *_QUEUE, "negatives.queue_mode=ids"],
    "clrec_cached": [*_CLREC, *_QUEUE, "negatives.queue_mode=embeddings"],
    "clrec_momentum": [*_CLREC, *_QUEUE, "negatives.queue_mode=momentum"],
    "multi_clrec": [*_CLREC, *_QUEUE, "negatives.queue_mode=ids", "negatives.intentions=4"],
    "cluster": ["negatives.cluster=15", "negatives.cluster_random=1"],
    "cluster_skip": [
        "negatives.cluster=15",
        "negatives.cluster_random=1",
        "negatives.cluster_skip=true",
    ],
    "ss_abc_random": ["uma2.strategy=SS-ABC-random"],
    "ss_abc_fixed": ["uma2.strategy=SS-ABC-fixed"],
    "uma2": ["uma2.strategy=UMA2"],
    "softmax_uma2_ab": ["negatives.space_a=1", "negatives.space_b=4", "uma2.propensity=true"],
}
