"""The speed settings of `training` and `model.inputs`, through `train` on the tiny dataset."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from common.config import ConfigError, load_config
from serving.retriever import Retriever
from tests.conftest import export
from trainer.dataset import load_dataset, make_dataset, parallel_reads
from trainer.distribute import set_op_threads
from trainer.train import load_run, train

SMALL = [
    "training.batch_size=16",
    "model.hidden_units=[16]",
    "model.output_dim=8",
    "model.embedding_dim=8",
    "negatives.exposure_correction=none",
]


def _train(tiny_dataset, tmp_path, *overrides, epochs=1):
    config = load_config(overrides=[*SMALL, f"training.epochs={epochs}", *overrides])
    run_dir = str(tmp_path / "run")
    run = train(config, tiny_dataset, run_dir, verbose=0)
    return run_dir, run


# TFRS's basic retrieval model: the two ids, its own task, no hidden layer.
IDS_ONLY = [
    "model.inputs=ids",
    "negatives.loss=tfrs",
    "negatives.in_batch_correction=none",
    "model.hidden_units=[]",
]


def test_ids_only_reads_the_two_ids(tiny_dataset, tmp_path):
    run_dir, run = _train(tiny_dataset, tmp_path, *IDS_ONLY)
    _, dataset, model = load_run(run_dir)
    assert model.input_features == ["user_id", "item_id"]
    assert model.query_tower.feature_names == ["user_id"]
    batch = next(iter(make_dataset(dataset, "train", 4, features=model.input_features)))
    assert set(batch) == {"user_id", "item_id"}
    # No history, features or cluster: an unknown user's embedding ignores them.
    users = {
        "user_id": tf.constant(["u1", "u1"]),
        "history": tf.constant([["i1"], ["i2"]]),
        "user.segment": tf.constant([["s0"], ["s1"]]),
    }
    embeddings = model.query_embeddings(users).numpy()
    np.testing.assert_array_equal(embeddings[0], embeddings[1])
    assert np.isfinite(run["history"]["loss"]).all()


def test_without_output_projection_the_towers_are_the_id_embeddings(tiny_dataset, tmp_path):
    run_dir, run = _train(tiny_dataset, tmp_path, *IDS_ONLY, "model.output_projection=false")
    assert np.isfinite(run["history"]["loss"]).all()
    _, _, model = load_run(run_dir)
    query = model.query_embeddings({"user_id": tf.constant(["u1"])}).numpy()
    table = model.query_tower._user_id
    np.testing.assert_allclose(query[0], table(tf.constant([["u1"]])).numpy()[0], rtol=1e-6)
    model.candidate_embeddings(tf.constant(["i1"]))
    # TFRS's basic retrieval model: an id embedding per tower, no dense layer.
    assert not [w.name for w in model.trainable_weights if "kernel" in w.name]
    # The exported query tower (standard ops, reloaded as TF Serving would) agrees.
    export(run_dir)
    retriever = Retriever(os.path.join(run_dir, "export"))
    np.testing.assert_allclose(retriever.embed([{"user_id": "u1"}]), query, rtol=1e-5)


def test_output_projection_false_needs_one_output_wide_embedding(tiny_dataset):
    from common.config import ConfigError
    from trainer.build import build_model

    with pytest.raises(ConfigError, match="output_projection.*hidden_units"):
        load_config(overrides=["model.output_projection=false"])  # hidden_units [128]
    config = load_config(
        overrides=[*SMALL, "model.hidden_units=[]", "model.output_projection=false"]
    )
    model = build_model(config, load_dataset(tiny_dataset))
    with pytest.raises(ValueError, match="query tower's inputs are 24 wide.*model.inputs=ids"):
        model.query_embeddings(
            {
                "user_id": tf.constant(["u1"]),
                "history": tf.constant([["i1"]]),
                "user.segment": tf.constant([["s0"]]),
            }
        )


def test_default_model_parses_what_its_sources_read(tiny_dataset):
    from trainer.build import build_model

    dataset = load_dataset(tiny_dataset)
    plain = build_model(load_config(overrides=SMALL), dataset)
    assert plain.input_features == ["user_id", "history", "user.segment", "item_id"]
    uma2 = build_model(load_config(overrides=[*SMALL, "uma2.strategy=UMA2"]), dataset)
    assert uma2.input_features[-4:] == ["space_a", "space_b", "num_space_a", "num_space_b"]


def test_steps_per_execution_and_cache_train(tiny_dataset, tmp_path):
    _, run = _train(
        tiny_dataset,
        tmp_path,
        "training.steps_per_execution=2",
        "training.cache=true",
        "training.batch_size=8",
        epochs=2,
    )
    assert len(run["history"]["loss"]) == 2 and np.isfinite(run["history"]["loss"]).all()
    rows = len(load_dataset(tiny_dataset).item_ids) + 2  # padding + one OOV bucket
    assert run["tables"]["tables"]["item_id/embedding"]["rows"] == rows
    assert run["tables"]["other_bytes"] > 0  # the MLPs, built by then


def test_drop_remainder_trains_full_batches_only(tiny_dataset, tmp_path):
    examples = load_dataset(tiny_dataset).manifest["splits"]["train"]["examples"]
    assert examples % 16  # SMALL's batch of 16 leaves a partial batch each epoch
    _, run = _train(tiny_dataset, tmp_path, "training.drop_remainder=true", epochs=2)
    assert run["examples_read"] == 2 * (examples - examples % 16)
    _, kept = _train(tiny_dataset, tmp_path / "kept", epochs=2)
    assert kept["examples_read"] == 2 * examples
    batches = make_dataset(load_dataset(tiny_dataset), "train", 16, drop_remainder=True)
    assert batches.element_spec["item_id"].shape[0] == 16  # static: what makes it faster
    with pytest.raises(ConfigError, match=f"{examples} examples make no full batch"):
        _train(
            tiny_dataset,
            tmp_path / "none",
            "training.drop_remainder=true",
            "training.batch_size=4096",
        )
    assert not (tmp_path / "none" / "run").exists()  # refused before the run began


def test_jit_compile_trains_the_ids_only_model_as_without(tiny_dataset, tmp_path):
    _, compiled = _train(tiny_dataset, tmp_path, *IDS_ONLY, "training.jit_compile=true", epochs=2)
    _, graph = _train(tiny_dataset, tmp_path / "graph", *IDS_ONLY, epochs=2)
    # The same batches, the same Adagrad rule (its XLA form): the same losses.
    np.testing.assert_allclose(compiled["history"]["loss"], graph["history"]["loss"], rtol=1e-4)


def test_jit_compile_of_a_step_xla_cannot_compile_is_a_clear_error(tiny_dataset, tmp_path):
    from common.config import ConfigError

    # The cluster recipe's per-row draws gather with ResourceGatherNd, which XLA lacks.
    with pytest.raises(ConfigError, match=r"training.jit_compile=true.*ops .*ResourceGatherNd"):
        _train(
            tiny_dataset,
            tmp_path,
            "negatives.cluster=4",
            "negatives.cluster_random=1",
            "training.jit_compile=true",
        )


def test_throughput_counts_steps_of_multi_step_calls():
    from trainer.callbacks import Throughput

    callback = Throughput(batch_size=10, steps_per_execution=4)
    callback.on_epoch_begin(0)
    for batch in (3, 7, 9):  # two calls of 4 steps, a last one of 2
        callback.on_train_batch_end(batch)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["examples_per_second"] == pytest.approx(10 * logs["steps_per_second"])
    assert callback._steps == 10


def test_mixed_precision_trains_float32_weights(tiny_dataset, tmp_path):
    run_dir, run = _train(tiny_dataset, tmp_path, "training.mixed_precision=true", epochs=2)
    _, plain = _train(tiny_dataset, tmp_path / "float32", epochs=2)
    # float16 compute with loss scaling: the same losses as float32, to float16's precision.
    np.testing.assert_allclose(run["history"]["loss"], plain["history"]["loss"], rtol=0.02)
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored
    _, dataset, model = load_run(run_dir)
    items = model.candidate_embeddings(tf.constant(dataset.item_ids[:3]))
    assert items.dtype == tf.float32
    weights = model.candidate_tower.trainable_variables
    assert weights and {v.dtype for v in weights} == {tf.float32}
    with open(os.path.join(run_dir, "config.yaml")) as f:
        assert "mixed_precision: true" in f.read()
    assert json.dumps(run)  # run.json holds plain numbers


def _batch_summary_steps(run_dir):
    import glob

    steps, tags = set(), set()
    for path in glob.glob(os.path.join(run_dir, "logs", "train", "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add(value.tag)
                if value.tag == "batch_loss":
                    steps.add(event.step)
    return steps, tags


@pytest.mark.parametrize("every", [0, 2])
def test_batch_summaries_are_written_on_the_steps_keras_records(tiny_dataset, tmp_path, every):
    # The trainer's TensorBoard callback skips the batches Keras would record nothing on;
    # the batches it records are still Keras's: every `summary_every_steps`-th step.
    run_dir, run = _train(tiny_dataset, tmp_path, f"training.summary_every_steps={every}")
    steps, tags = _batch_summary_steps(run_dir)
    total = -(-int(run["examples_read"]) // 16)  # steps of batch 16, the last partial
    assert total >= 4
    expected = set(range(every, total + 1, every)) if every else set()
    assert steps == expected
    assert "epoch_loss" in tags


def test_shards_read_in_turn_or_in_parallel_give_the_same_batches(tiny_dataset, monkeypatch):
    dataset = load_dataset(tiny_dataset)
    assert len(dataset.files("train")) > 1  # the interleave has shards to take turns over

    def batches(parallel):
        options = {"shuffle": True, "seed": 3, "shuffle_buffer": 64, "parallel": parallel}
        data = make_dataset(dataset, "train", 4, **options)
        return [b["item_id"].numpy().tolist() for b in data]

    assert batches(True) == batches(False)
    for cores, expected in ((1, False), (2, False), (4, True), (None, False)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert parallel_reads("auto") is expected
    assert parallel_reads("on") is True and parallel_reads("off") is False
    with pytest.raises(ValueError, match="parallel_reads"):
        load_config(overrides=["training.parallel_reads=sometimes"])


_SIZED_RUN = """
import sys
import twotower  # noqa: F401  (TF_USE_LEGACY_KERAS first)
import tensorflow as tf
from common.config import load_config
from trainer.train import train
config = load_config(overrides=sys.argv[3:])
run = train(config, sys.argv[1], sys.argv[2], verbose=0)
print(
    tf.config.threading.get_intra_op_parallelism_threads(),
    tf.config.threading.get_inter_op_parallelism_threads(),
    len(run["history"]["loss"]),
)
"""


def test_op_thread_pools_are_sized_before_tensorflow_starts(tiny_dataset, tmp_path):
    # A fresh process, as `twotower train` is: the pools are sized before the runtime
    # starts (the placement's first step), so the sizes asked for are the ones it runs.
    overrides = [*SMALL, "training.epochs=1"]
    overrides += ["training.intra_op_threads=1", "training.inter_op_threads=3"]
    result = subprocess.run(
        [sys.executable, "-c", _SIZED_RUN, tiny_dataset, str(tmp_path / "run"), *overrides],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert result.stdout.split()[-3:] == ["1", "3", "1"]


def test_op_thread_pools_cannot_be_resized_once_tensorflow_started(tiny_dataset, tmp_path):
    tf.constant(1.0) + 1.0  # the runtime is started (as every test process's is by now)
    set_op_threads(0, 0)  # 0: TensorFlow's default, left as it is
    before = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(ConfigError, match=r"training.intra_op_threads: 7 threads.*new process"):
        _train(tiny_dataset, tmp_path, "training.intra_op_threads=7")
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
    with pytest.raises(ConfigError, match=r"training.inter_op_threads: 5 threads"):
        set_op_threads(0, 5)
    assert tf.config.threading.get_intra_op_parallelism_threads() == before
