"""UMA² strategies, NSDN weights and DAT towers, trained on the tiny dataset."""

import dataclasses
import logging

import numpy as np
import pytest
import tensorflow as tf

from common.config import load_config
from trainer import build
from trainer.build import build_model, resolve_negatives, space_c_advice
from trainer.dataset import load_dataset, make_dataset
from trainer.model import TwoTowerModel

SMALL = [
    "model.hidden_units=[16]",
    "model.output_dim=8",
    "model.embedding_dim=8",
    "training.batch_size=16",
]


@pytest.mark.parametrize(
    "strategy, counts, propensity",
    [
        ("SS-A", (1, 0, 0), False),
        ("SS-AB", (1, 4, 0), False),
        ("SS-ABC-random", (0, 0, 25), False),
        ("SS-ABC-fixed", (1, 4, 20), False),
        ("UMA2", (1, 4, 20), True),
    ],
)
def test_strategy_presets(strategy, counts, propensity):
    negatives, nsdn = resolve_negatives(load_config(overrides=[f"uma2.strategy={strategy}"]))
    assert (negatives.space_a, negatives.space_b, negatives.space_c) == counts
    assert negatives.loss == "bce" and not negatives.in_batch
    assert nsdn is propensity


def test_per_row_space_c_on_a_large_catalog_is_told_of_the_pool(tiny_dataset, caplog, monkeypatch):
    """UMA²'s per-row draws on a catalog of 100k items or more: building the model says
    which settings keep the step flat in the catalog; with the pool, or without Space C
    or a large catalog, it says nothing."""
    negatives, _ = resolve_negatives(load_config(overrides=["uma2.strategy=UMA2"]))
    advice = space_c_advice(negatives, 1_000_000, 512)
    assert "1,000,000-item catalog: up to 10,240 distinct items a step" in advice
    assert "negatives.space_c_pool=512 with uma2.head_space_c=4" in advice
    assert space_c_advice(negatives, 99_999, 512) is None
    assert space_c_advice(dataclasses.replace(negatives, space_c_pool=512), 10**6, 512) is None
    assert space_c_advice(resolve_negatives(load_config())[0], 10**6, 512) is None
    dataset = load_dataset(tiny_dataset)
    monkeypatch.setattr(build, "LARGE_CATALOG", len(dataset.item_ids))  # the tiny one is large
    with caplog.at_level(logging.WARNING, logger="twotower.train"):
        build_model(load_config(overrides=SMALL + ["uma2.strategy=UMA2"]), dataset)
        build_model(load_config(overrides=SMALL + ["uma2.strategy=SS-AB"]), dataset)
    said = [r.getMessage() for r in caplog.records if "space_c_pool" in r.getMessage()]
    assert len(said) == 1 and f"{len(dataset.item_ids):,}-item catalog: up to 320" in said[0]


def _train(dataset_dir, overrides, epochs=2):
    tf.keras.utils.set_random_seed(0)
    dataset = load_dataset(dataset_dir)
    model = build_model(load_config(overrides=SMALL + overrides), dataset)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.05))
    history = model.fit(make_dataset(dataset, "train", 16), epochs=epochs, verbose=0)
    return dataset, model, history.history


def test_uma2_trains_with_bounded_weights_and_both_heads(tiny_dataset):
    _, model, history = _train(tiny_dataset, ["uma2.strategy=UMA2", "uma2.max_weight=7"], 8)
    assert [s.name for s in model.sources] == ["space_a", "space_b", "space_c"]
    for name in ("loss", "loss_er", "loss_re", "loss_A", "loss_B", "loss_C", "loss_positive"):
        assert np.isfinite(history[name]).all(), name
    for group in ("A", "B"):
        assert min(history[f"ipw_{group}_mean"]) >= 1.0
        assert max(history[f"ipw_{group}_max"]) <= 7.0
    # The propensity losses fall as the heads learn who was recalled and exposed.
    assert np.mean(history["loss_er"][-2:]) < np.mean(history["loss_er"][:2])
    # The clicks carry IPW weights too (uma2.weigh_positives, the default).
    assert 1.0 <= min(history["ipw_positive_mean"]) <= max(history["ipw_positive_mean"]) <= 7.0


def test_softmax_with_weighted_spaces_trains(tiny_dataset):
    overrides = ["negatives.space_a=1", "negatives.space_b=4", "uma2.propensity=true"]
    _, model, history = _train(tiny_dataset, overrides, 2)
    assert [s.name for s in model.sources] == ["in_batch", "space_a", "space_b"]
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    assert "ipw_positive_mean" not in history  # a softmax has no click weight to apply


def test_lambda_zero_removes_a_term(tiny_dataset):
    _, _, history = _train(tiny_dataset, ["uma2.strategy=SS-ABC-fixed", "uma2.lambda_c=0"], 1)
    assert history["loss_C"] == [0.0]
    assert history["loss_A"][0] > 0


def test_dat_towers_train_and_reload_with_identical_scores(tiny_dataset, tmp_path):
    dataset, model, history = _train(tiny_dataset, ["model.tower=dat"])
    assert history["loss_mimic"][-1] < history["loss_mimic"][0]
    ids = tf.constant(dataset.item_ids)
    batch = next(iter(make_dataset(dataset, "eval", 8)))
    scores = model.query_embeddings(batch).numpy() @ model.candidate_embeddings(ids).numpy().T
    model.save_weights(str(tmp_path / "w"))
    clone = TwoTowerModel.from_config(model.get_config())
    clone.load_weights(str(tmp_path / "w")).expect_partial()
    reloaded = clone.query_embeddings(batch).numpy() @ clone.candidate_embeddings(ids).numpy().T
    np.testing.assert_allclose(reloaded, scores, rtol=1e-5)
    assert [s["config"]["name"] for s in model.get_config()["sources"]] == ["in_batch"]


def test_ipw_weights_reach_tensorboard(tiny_dataset, tmp_path):
    import glob

    from trainer.train import train

    config = load_config(overrides=[*SMALL, "uma2.strategy=UMA2", "training.epochs=1"])
    train(config, tiny_dataset, str(tmp_path / "run"), verbose=0)
    tags = set()
    for path in glob.glob(str(tmp_path / "run" / "logs" / "train" / "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"ipw/A", "ipw/B", "epoch_ipw_A_mean", "epoch_loss_er", "epoch_loss_re"} <= tags
