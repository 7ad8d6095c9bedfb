"""The vocabulary lookups run in the input pipeline: the training step holds no strings."""

import numpy as np
import pytest
import tensorflow as tf

from common.config import load_config
from trainer.build import build_model
from trainer.dataset import load_dataset, make_dataset
from twotower.bench.recipes import RECIPES

SMALL = ["model.embedding_dim=8", "model.hidden_units=[8]", "model.output_dim=8"]


def _model_and_batches(tiny_dataset, recipe):
    tf.keras.utils.set_random_seed(0)
    dataset = load_dataset(tiny_dataset)
    model = build_model(load_config(overrides=[*SMALL, *RECIPES[recipe]]), dataset)
    options = {"features": model.input_features}
    raw = next(iter(make_dataset(dataset, "train", 16, **options)))
    indexed = next(iter(make_dataset(dataset, "train", 16, index=model.index_features, **options)))
    return model, raw, indexed


@pytest.mark.parametrize(
    "recipe",
    ["default", "uma2", "cluster", "clrec_cached", "multi_clrec", "multi_clrec_momentum_1024"],
)
def test_the_training_step_holds_no_string_op(tiny_dataset, recipe):
    model, _, indexed = _model_and_batches(tiny_dataset, recipe)
    strings = sorted(k for k, v in indexed.items() if v.dtype == tf.string)
    assert strings == []  # every id the step reads arrives as rows or catalog indices
    model.compute_loss(indexed, training=True)  # builds the variables
    step = tf.function(lambda f: model.compute_loss(f, training=True))
    graph = step.get_concrete_function(
        {k: tf.TensorSpec(v.shape, v.dtype) for k, v in indexed.items()}
    ).graph
    string_ops = sorted(
        {op.type for op in graph.get_operations() if any(t.dtype == tf.string for t in op.outputs)}
    )
    assert string_ops == []


def test_looked_up_batches_give_the_loss_of_raw_ones(tiny_dataset):
    model, raw, indexed = _model_and_batches(tiny_dataset, "default")
    np.testing.assert_array_equal(
        indexed["item_id"].numpy(), model.candidate_tower.item_index(raw["item_id"]).numpy()
    )
    assert indexed["item_id"].dtype == tf.int64 and indexed["history"].dtype == tf.int64
    np.testing.assert_allclose(
        model.compute_loss(indexed).numpy(), model.compute_loss(raw).numpy(), rtol=1e-6
    )
