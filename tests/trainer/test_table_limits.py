"""data.min_count / data.max_vocab_size, and what the tables cost a replica."""

import json
import os

import numpy as np
import tensorflow as tf

from common.config import load_config
from pipelines.manifest import limit_vocabulary
from tests.conftest import run_preprocess
from trainer.build import build_model
from trainer.dataset import load_dataset
from trainer.table_sizes import SLOTS, check_budget, table_sizes


def test_limit_keeps_frequent_tokens_then_the_first_n():
    counts = [("a", 9), ("b", 5), ("c", 2), ("d", 1)]
    assert limit_vocabulary(counts, 1, 0) == counts
    assert limit_vocabulary(counts, 2, 0) == counts[:3]
    assert limit_vocabulary(counts, 2, 2) == counts[:2]
    assert limit_vocabulary(counts, 10, 0) == []


def test_limited_vocabularies_shrink_the_id_tables(tiny_logs, tiny_dataset, tmp_path):
    requests, catalog = tiny_logs
    limited = str(tmp_path / "limited")
    run_preprocess(limited, requests, catalog, "data.min_count=2", "data.max_vocab_size=5")
    with open(os.path.join(limited, "manifest.json")) as f:
        vocabularies = json.load(f)["vocabularies"]
    with open(os.path.join(tiny_dataset, "manifest.json")) as f:
        full = json.load(f)["vocabularies"]
    for name in ("user_id", "item_id"):
        assert vocabularies[name]["counted"] == full[name]["size"] > 5
        assert vocabularies[name]["size"] == 5
        assert vocabularies[name]["rows"] == 5 + 1 + 1  # padding + one OOV bucket
    # The five most clicked items keep their rows; the others share the bucket.
    dataset, whole = load_dataset(limited), load_dataset(tiny_dataset)
    assert len(dataset.item_id_vocabulary) == 5 and whole.item_id_vocabulary == whole.item_ids
    config = load_config(overrides=["negatives.exposure_correction=none"])
    model = build_model(config, dataset)
    assert model.candidate_tower._item_id.vocabulary_size() == 7
    assert model.query_tower._history.vocabulary_size() == 7
    assert model.query_tower._user_id.vocabulary_size() == 7
    rows = model.candidate_tower._id_rows.numpy()[1:, 0]  # each catalog item's id row
    kept = set(dataset.item_id_vocabulary)
    assert {r for r, item in zip(rows, dataset.item_ids, strict=True) if item not in kept} == {1}
    assert sorted(r for r, item in zip(rows, dataset.item_ids, strict=True) if item in kept) == [
        2,
        3,
        4,
        5,
        6,
    ]
    # Items without their own row still differ by cluster and features.
    embeddings = model.candidate_embeddings(tf.constant(dataset.item_ids)).numpy()
    assert len({tuple(np.round(e, 5)) for e in embeddings}) > 5


def test_table_sizes_and_the_memory_budget(tiny_dataset):
    config = load_config(overrides=["negatives.exposure_correction=none"])
    dataset = load_dataset(tiny_dataset)
    model = build_model(config, dataset)
    sizes = table_sizes(model, "adam")
    table = sizes["tables"]["item_id/embedding"]
    rows = len(dataset.item_ids) + 2  # padding + one OOV bucket
    assert table == {
        "rows": rows,
        "dim": 32,
        "weight_bytes": rows * 32 * 4,
        "slot_bytes": rows * 32 * 4 * SLOTS["adam"],
    }
    assert sizes["total_bytes"] >= sum(t["weight_bytes"] * 3 for t in sizes["tables"].values())
    assert check_budget(sizes, 0) is None and check_budget(sizes, 1.0) is None
    warning = check_budget(sizes, 1e-6)
    assert "memory_budget_gb=1e-06" in warning and "max_vocab_size" in warning


def test_table_sizes_list_the_propensity_heads_item_table(tiny_dataset):
    """UMA²'s heads keep an item table of their own (a row per catalog item + none): a
    catalog-sized table the budget must count before the first step builds it."""
    config = load_config(overrides=["uma2.strategy=UMA2", "uma2.head_item_dim=8"])
    dataset = load_dataset(tiny_dataset)
    model = build_model(config, dataset)
    sizes = table_sizes(model, "adagrad")
    rows = len(dataset.item_ids) + 1
    assert sizes["tables"]["head_item_embedding/embedding"] == {
        "rows": rows,
        "dim": 8,
        "weight_bytes": rows * 8 * 4,
        "slot_bytes": rows * 8 * 4,
    }
    # A token bag's own Embedding is listed once, under the bag's name.
    assert not any(name.startswith("embedding") for name in sizes["tables"])
    assert "item_id/embedding" in sizes["tables"]
