import os
import re
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from common.config import load_config
from trainer.build import build_model
from trainer.dataset import Dataset
from trainer.string_index import StringIndex


@pytest.mark.parametrize("mask, buckets", [("", 1), ("", 3), (None, 1), (None, 2)])
def test_rows_are_string_lookups(mask, buckets):
    vocabulary = ["a", "b", "c", "é"]
    strings = tf.constant([["a", "", "zz", "é"], ["q", "w", "c", "b"]])
    keras = tf.keras.layers.StringLookup(
        vocabulary=vocabulary, mask_token=mask, num_oov_indices=buckets
    )
    index = StringIndex(vocabulary, buckets, mask_token=mask)
    np.testing.assert_array_equal(index(strings).numpy(), keras(strings).numpy())
    assert index.vocabulary_size() == keras.vocabulary_size() == 4 + buckets + (mask is not None)


def test_empty_vocabulary_sends_everything_to_the_buckets():
    np.testing.assert_array_equal(StringIndex([], 1, mask_token="")(["x", ""]).numpy(), [1, 0])


def _dataset(directory, num_items):
    items = [f"i{i}" for i in range(num_items)]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "item_frequency.tsv"), "w") as f:
        f.writelines(f"{item}\t1\n" for item in items)
    return Dataset(
        directory=str(directory),
        manifest={"user_features": ["segment"], "files": {"item_frequency": "item_frequency.tsv"}},
        item_ids=items,
        item_clusters=[f"c{i % 5}" for i in range(num_items)],
        item_features={"band": [[f"b{i % 7}"] for i in range(num_items)]},
        vocabularies={
            "user_id": [f"u{i}" for i in range(num_items)],
            "user.segment": ["s0", "s1"],
        },
    )


_ID = re.compile(r"^\d{9,}$")


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "negatives.queue_size=64",
            "negatives.cluster=2",
            "negatives.cluster_shared=true",
            "negatives.space_a=1",
            "negatives.intentions=2",
            "uma2.propensity=true",
        ],
        # The momentum queue's copy of the item tower, and intention queues that follow it.
        ["negatives.queue_size=64", "negatives.queue_mode=momentum"],
        ["negatives.queue_size=64", "negatives.queue_mode=momentum", "negatives.intentions=2"],
    ],
)
def test_what_keras_walks_each_step_does_not_grow_with_the_catalog(tmp_path, overrides):
    # Keras lists a model's layers and metrics at every step (the progress bar does):
    # everything reachable from the model's attributes. A catalog-sized Python list in
    # there made a 100k-item step 40x slower than a 5k-item one.
    config = load_config(overrides=["negatives.exposure_correction=none", *overrides])
    walked = []
    for items in (30, 3000):
        model = build_model(config, _dataset(tmp_path / str(items), items))
        paths = [path for path, _ in model._flatten(predicate=lambda _: True, with_path=True)]
        # A Sequential built by an eager call (the momentum queue's `bind`) keys its
        # `_tensor_usage_count` by tensor ids, which differ between any two builds.
        walked.append(Counter(tuple(_ID.sub("<id>", str(p)) for p in path) for path in paths))
    assert sum(walked[0].values()) > 100
    assert walked[0] == walked[1]
    # The catalog the model's tables are built from: the ids in index order, read-only.
    catalog = model.candidate_tower.catalog
    assert list(catalog[:3]) == ["i0", "i1", "i2"] and len(catalog) == 3000
    with pytest.raises(ValueError, match="read-only"):
        catalog[0] = "x"


@pytest.mark.parametrize("shared", [False, True])
def test_cluster_shared_setting_reaches_the_cluster_source(tmp_path, shared):
    config = load_config(
        overrides=[
            "negatives.exposure_correction=none",
            "negatives.cluster=2",
            f"negatives.cluster_shared={str(shared).lower()}",
        ]
    )
    model = build_model(config, _dataset(tmp_path, 30))
    (cluster,) = [s for s in model.sources if s.name == "cluster"]
    assert cluster.get_config()["shared"] is shared


@pytest.mark.parametrize("pool, head_c", [(0, 0), (64, 4)])
def test_space_c_settings_reach_the_uma2_presets_space_c_and_heads(tmp_path, pool, head_c):
    config = load_config(
        overrides=[
            "negatives.exposure_correction=none",
            "uma2.strategy=UMA2",
            f"negatives.space_c_pool={pool}",
            f"uma2.head_space_c={head_c}",
        ]
    )
    model = build_model(config, _dataset(tmp_path, 30))
    (space_c,) = [s for s in model.sources if s.name == "space_c"]
    assert space_c.get_config()["pool"] == pool
    assert space_c.get_config()["count"] == 20  # the preset's 20 per Space A item
    assert model.propensity_network.get_config()["head_space_c"] == head_c
