"""Builds the model a config describes: towers sized by the dataset, negative sources."""

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from common.config import Config, NegativesConfig, Uma2Config
from common.contracts import USER_FEATURE_PREFIX
from trainer.content import content_clusters
from trainer.dataset import Dataset
from trainer.exposure import ExposurePropensity
from trainer.model import TwoTowerModel
from trainer.negatives.cluster import ClusterNegatives
from trainer.negatives.corpus import CorpusNegatives
from trainer.negatives.in_batch import InBatchNegatives
from trainer.negatives.intention_queue import IntentionQueueNegatives
from trainer.negatives.logged import LoggedNegatives
from trainer.negatives.momentum_queue import MomentumQueueNegatives
from trainer.negatives.queue import QueueNegatives
from trainer.negatives.source import NegativeSource
from trainer.propensity_network import PropensityNetwork
from trainer.towers import CandidateTower, QueryTower

_LOG = logging.getLogger("twotower.train")
# From this catalog size on, per-row uniform Space C draws cost several default steps: each
# row's draws are nearly all distinct items, each through the item tower and a sparse update
# of large tables (docs/performance.md: UMA²'s preset 19.2 / 24.9 / 36.1 ms a step on 10k /
# 100k / 1M items, the default 6.8; with the pool 14.9 / 14.5 / 15.2).
LARGE_CATALOG = 100_000

# UMA² Table 1 rows. A and B counts are what preprocessing kept per positive
# (data.num_a, data.num_b; 1 and 4 by default), C completes the paper's 1:4:20.
SPACE_C_PER_A = 20
ExposureCounts = tuple[list[str], list[int], int]  # what Dataset.item_exposure() returns


def resolve_negatives(config: Config) -> tuple[NegativesConfig, bool]:
    """The negatives config after the UMA² strategy preset, and whether NSDN is on."""
    strategy = config.uma2.strategy
    negatives = config.negatives
    if strategy == "none":
        return negatives, config.uma2.propensity
    a, b = config.data.num_a, config.data.num_b
    counts = {
        "SS-A": (a, 0, 0),
        "SS-AB": (a, b, 0),
        "SS-ABC-random": (0, 0, a + b + SPACE_C_PER_A * a),
        "SS-ABC-fixed": (a, b, SPACE_C_PER_A * a),
        "UMA2": (a, b, SPACE_C_PER_A * a),
    }[strategy]
    resolved = dataclasses.replace(
        negatives,
        loss="bce",
        in_batch=False,
        corpus=0,
        queue_size=0,
        intentions=0,
        cluster=0,
        cluster_random=0,
        space_a=counts[0],
        space_b=counts[1],
        space_c=counts[2],
    )
    return resolved, strategy == "UMA2" or config.uma2.propensity


def space_c_advice(negatives: NegativesConfig, num_items: int, batch_size: int) -> str | None:
    """What to set when per-row Space C draws meet a large catalog; None when they do not."""
    if not negatives.space_c or negatives.space_c_pool or num_items < LARGE_CATALOG:
        return None
    return (
        f"negatives.space_c={negatives.space_c} uniform draws per row on a {num_items:,}-item "
        f"catalog: up to {batch_size * negatives.space_c:,} distinct items a step through the "
        "item tower and the sparse updates, most of the step (UMA²'s preset: 5.3x the "
        "default's step at 1M items). negatives.space_c_pool=512 with uma2.head_space_c=4 "
        "keeps the step flat in the catalog (2.2x at 1M), quality unchanged over five "
        "worlds (docs/uma2.md)"
    )


def build_sources(
    negatives: NegativesConfig,
    dataset: Dataset,
    candidate: CandidateTower,
    batch_size: int,
    seed: int = 0,
    similarity: str = "dot",
) -> list[NegativeSource]:
    """The negative sources `negatives` asks for, in a fixed order."""
    dim = candidate.get_config()["output_dim"]
    sources: list[NegativeSource] = []
    if negatives.loss == "tfrs":
        return sources
    if negatives.in_batch:
        sources.append(
            InBatchNegatives(
                correction=negatives.in_batch_correction,
                item_probabilities=dataset.item_probabilities()
                if negatives.in_batch_correction == "static"
                else None,
                frequency_buckets=negatives.frequency_buckets,
                frequency_alpha=negatives.frequency_alpha,
                cross_replica=negatives.cross_replica_in_batch,
                name="in_batch",
            )
        )
    if negatives.corpus:
        sources.append(
            CorpusNegatives(
                negatives.corpus,
                corrected=negatives.in_batch and negatives.in_batch_correction != "none",
                seed=seed,
                name="corpus",
            )
        )
    for group, count in (("A", negatives.space_a), ("B", negatives.space_b)):
        if count:
            sources.append(LoggedNegatives(group, count, name=f"space_{group.lower()}"))
    if negatives.space_c:
        sources.append(
            CorpusNegatives(
                negatives.space_c,
                per_row=True,
                group="C",
                pool=negatives.space_c_pool,
                seed=seed,
                name="space_c",
            )
        )
    queue_size = negatives.queue_size or 10 * batch_size  # CLRec's default: 10× the batch
    if negatives.queue_size and negatives.queue_mode == "momentum":
        queue = MomentumQueueNegatives(
            queue_size,
            dim,
            momentum=negatives.queue_momentum,
            temperature=negatives.temperature if similarity == "cosine" else 1.0,
            cosine=similarity == "cosine",
            name="queue",
        )
        sources.append(queue)
    elif negatives.queue_size:
        sources.append(QueueNegatives(queue_size, dim, negatives.queue_mode, name="queue"))
    if negatives.intentions:
        intentions = IntentionQueueNegatives(
            negatives.intentions,
            max(1, queue_size // negatives.intentions),
            dim,
            candidate.get_config()["embedding_dim"],
            mode=negatives.queue_mode,
            temperature=negatives.temperature if similarity == "cosine" else 1.0,
            cosine=similarity == "cosine",
            seed=seed,
            name="intention_queues",
        )
        sources.append(intentions)
    if negatives.cluster or negatives.cluster_random:
        catalog_clusters = sorted(set(dataset.item_clusters))
        num_clusters = (
            negatives.kmeans_clusters or len(catalog_clusters)
            if negatives.cluster_source in ("kmeans", "content")
            else len(catalog_clusters)
        )
        cluster = ClusterNegatives(
            negatives.cluster,
            negatives.cluster_random,
            len(dataset.item_ids),
            num_clusters,
            seed=seed,
            margin=negatives.cluster_margin if negatives.cluster_skip else None,
            shared=negatives.cluster_shared,
            name="cluster",
        )
        if negatives.cluster_source == "catalog":
            index = {name: i for i, name in enumerate(catalog_clusters)}
            cluster.pool.assign(np.array([index[c] for c in dataset.item_clusters]))
        elif negatives.cluster_source == "content":  # once: the content does not train
            cluster.pool.assign(content_clusters(dataset, num_clusters, seed))
        sources.append(cluster)
    return sources


def build_model(config: Config, dataset: Dataset) -> TwoTowerModel:
    """The model that `config` describes, sized by `dataset`'s vocabularies and catalog."""
    model = config.model
    negatives, propensity = resolve_negatives(config)
    advice = space_c_advice(negatives, len(dataset.item_ids), config.training.batch_size)
    if advice:
        _LOG.warning("%s", advice)
    towers = {
        "embedding_dim": model.embedding_dim,
        "hidden_units": model.hidden_units,
        "output_dim": model.output_dim,
        "projection": model.output_projection,
        "augmented": model.tower == "dat",
        "num_oov_buckets": dataset.num_oov_buckets,
    }
    everything = model.inputs == "all"
    content = everything and model.content_features
    user_dense = dataset.user_dense()
    item_dense = dataset.item_dense() if content else {}
    id_vocabulary = dataset.item_id_vocabulary  # the catalog, or the limited vocabulary
    query = QueryTower(
        user_vocabulary=dataset.vocabularies.get("user_id", []),
        item_ids=id_vocabulary,
        user_feature_vocabularies={
            name: dataset.vocabularies.get(USER_FEATURE_PREFIX + name, [])
            for name in (dataset.user_features if everything else [])
            if name not in user_dense
        },
        user_dense=user_dense if content else {},
        history=everything,
        name="query_tower",
        **towers,
    )
    candidate = CandidateTower(
        item_id_init=model.item_id_init,
        id_dropout=model.item_id_dropout,
        seed=config.training.seed,
        item_ids=dataset.item_ids,
        item_id_vocabulary=None if id_vocabulary is dataset.item_ids else id_vocabulary,
        item_clusters=dataset.item_clusters,
        item_features=dataset.item_features if everything else {},
        item_dense=item_dense,
        item_dense_values=dataset.item_dense_values() if item_dense else {},
        cluster=everything,
        name="candidate_tower",
        **towers,
    )
    tfrs_logq = negatives.loss == "tfrs" and negatives.in_batch_correction == "static"
    uma2 = config.uma2
    # item_exposure.tsv, read once for the exposure correction and the UMA² heads, and only
    # for them; the correction requires it (a clear error for an old dataset), the heads
    # use it if there.
    correct = negatives.exposure_correction != "none"
    wanted = correct or (propensity and dataset.has_item_exposure())
    counts = dataset.item_exposure() if wanted else None
    return TwoTowerModel(
        query,
        candidate,
        sources=build_sources(
            negatives,
            dataset,
            candidate,
            config.training.batch_size,
            config.training.seed,
            model.similarity,
        ),
        loss=negatives.loss,
        similarity=model.similarity,
        temperature=negatives.temperature,
        remove_accidental_hits=negatives.remove_accidental_hits,
        item_probabilities=dataset.item_probabilities() if tfrs_logq else None,
        lambdas={
            "A": uma2.lambda_a,
            "B": uma2.lambda_b,
            "C": uma2.lambda_c,
            "ER": uma2.lambda_er,
            "RE": uma2.lambda_re,
        },
        propensity_network=(
            _propensity_network(
                uma2, counts, config.training.seed, negatives.loss == "bce", len(dataset.item_ids)
            )
            if propensity
            else None
        ),
        mimic_weight=model.mimic_weight if model.tower == "dat" else 0.0,
        exposure=_exposure(negatives, counts) if correct else None,
    )


def _propensity_network(
    uma2: Uma2Config, counts: ExposureCounts | None, seed: int, bce: bool, num_items: int
) -> PropensityNetwork:
    """UMA²'s heads; they also see each item's logged exposure rate where the dataset
    counted exposures (what the legacy recall and ranker follow, beside the embeddings).
    Clicks get weights only in the BCE loss (a softmax's positive has no weight)."""
    exposure = None
    if counts is not None:
        exposure = ExposurePropensity(*counts, name="item_exposure")
    return PropensityNetwork(
        uma2.head_units,
        uma2.max_weight,
        uma2.self_normalize,
        uma2.head_negatives,
        head_space_c=uma2.head_space_c,
        weigh_positives=uma2.weigh_positives and bce,
        train_towers=uma2.heads_train_towers,
        num_items=num_items,
        item_dim=uma2.head_item_dim,
        seed=seed,
        item_exposure=exposure,
        name="propensity_network",
    )


def _exposure(negatives: NegativesConfig, counts: ExposureCounts) -> ExposurePropensity:
    return ExposurePropensity(
        *counts,
        negatives.exposure_smoothing,
        negatives.exposure_strength,
        name="exposure",
    )


def training_callbacks(config: Config, model: TwoTowerModel) -> list:
    """Callbacks the negative sources need during `fit` (k-means refresh of clusters)."""
    from trainer.negatives.cluster import ClusterNegatives  # noqa: PLC0415
    from trainer.negatives.kmeans import KMeansRefresh  # noqa: PLC0415

    callbacks = []
    for source in model.sources:
        if isinstance(source, ClusterNegatives) and config.negatives.cluster_source == "kmeans":
            ids = model.candidate_tower.catalog

            def embed_items(ids: np.ndarray = ids) -> np.ndarray:
                return np.concatenate(
                    [
                        model.candidate_embeddings(tf.constant(ids[i : i + 4096])).numpy()
                        for i in range(0, len(ids), 4096)
                    ]
                )

            callbacks.append(
                KMeansRefresh(
                    source.pool,
                    embed_items,
                    config.negatives.kmeans_every_steps,
                    seed=config.training.seed,
                    refresh_at_start=True,
                )
            )
    return callbacks
