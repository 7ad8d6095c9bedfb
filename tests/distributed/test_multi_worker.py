"""Two real worker processes over localhost: synchronised state, equal losses, preemption."""

import json
import os
import pathlib
import signal
import time

import numpy as np
import pytest
import tensorflow as tf
from distributed_workers import TINY, start, start_cluster, wait_all

from common.exit_codes import RETRYABLE


def _read(path) -> list:
    return json.loads(pathlib.Path(path).read_text())


def _weights(run_dir: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints", "final"))
    names = [n for n in reader.get_variable_to_shape_map() if "CHECKPOINTABLE" not in n]
    return {name: np.asarray(reader.get_tensor(name)) for name in names}


@pytest.fixture(scope="module")
def single(tiny_dataset, tmp_path_factory):
    """One process on the same global batches (backup on: the same resumable stream)."""
    folder = tmp_path_factory.mktemp("single")
    record = folder / "steps.json"
    args = [tiny_dataset, str(folder / "run"), str(record), *TINY, "training.backup=always"]
    wait_all([start(args, None)])
    return folder / "run", _read(record)


@pytest.fixture(scope="module")
def two_workers(tiny_dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    run = str(folder / "run")
    wait_all(start_cluster(lambda i: [tiny_dataset, run, str(folder / f"steps{i}.json"), *TINY]))
    return folder / "run", [_read(folder / f"steps{i}.json") for i in range(2)]


def test_workers_hold_identical_weights_and_queue_after_every_step(two_workers):
    _, (first, second) = two_workers
    # 60 examples // global batch 8 = 7 steps an epoch, 3 epochs.
    assert len(first) == len(second) == 21
    for step, (a, b) in enumerate(zip(first, second, strict=True)):
        assert a["weights"] == b["weights"], f"step {step}: weights differ"
        assert a["queue_indices"] == b["queue_indices"], f"step {step}: queue ids differ"
        assert a["queue_embeddings"] == b["queue_embeddings"], f"step {step}: queue differs"
        assert a["loss"] == b["loss"]
    # Both replicas' rows went in: after step 1 the queue holds the whole global batch.
    assert sum(i >= 0 for i in first[0]["queue_indices"]) == 8


def test_two_workers_match_one_worker_on_the_same_global_batches(two_workers, single):
    _, (first, _) = two_workers
    _, reference = single
    assert len(reference) == len(first)
    for step, (a, b) in enumerate(zip(first, reference, strict=True)):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4, err_msg=f"step {step}")
        np.testing.assert_allclose(a["weights"], b["weights"], rtol=1e-4, atol=1e-5)
        assert a["queue_indices"] == b["queue_indices"]
        np.testing.assert_allclose(a["queue_embeddings"], b["queue_embeddings"], atol=1e-4)


def test_only_the_chief_writes_the_run_directory(two_workers):
    run, _ = two_workers
    assert sorted(os.listdir(run)) == ["checkpoints", "config.yaml", "logs", "run.json"]
    summary = json.loads((run / "run.json").read_text())["distribution"]
    assert summary["workers"] == summary["replicas"] == 2
    assert summary["per_replica_batch"] == 4 and summary["global_batch"] == 8
    assert not [p for p in run.rglob("*") if "workertemp" in p.name]


def test_killed_worker_resumes_and_finishes_like_an_uninterrupted_run(
    tiny_dataset, tmp_path, two_workers
):
    run = tmp_path / "run"
    record = [str(tmp_path / f"steps{i}.json") for i in range(2)]
    slow = {"SLOW_STEP_SECONDS": "0.3"}
    workers = start_cluster(lambda i: [tiny_dataset, str(run), record[i], *TINY], env=slow)
    backup = run / "backup" / "chief"
    deadline = time.time() + 120
    while not (backup.exists() and any(p.suffix == ".index" for p in backup.iterdir())):
        assert time.time() < deadline and workers[0].poll() is None, "no backup was written"
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)  # preempted mid-epoch
    for w in workers:
        w.wait(timeout=90)
    assert workers[1].returncode == -signal.SIGKILL
    # The survivor sees its peer gone and exits with the retryable code: the TFJob
    # restarts both pods.
    assert workers[0].returncode == RETRYABLE
    steps_before = len(_read(record[0]))
    assert 0 < steps_before < 21
    wait_all(start_cluster(lambda i: [tiny_dataset, str(run), record[i], *TINY]))
    summary = json.loads((run / "run.json").read_text())
    assert 0 < summary["distribution"]["resumed_at_step"] < 21
    assert not (run / "backup").exists()
    expected_run, (expected, _) = two_workers
    resumed = _read(record[0])
    assert len(resumed) == 21 - summary["distribution"]["resumed_at_step"]
    np.testing.assert_allclose(resumed[-1]["loss"], expected[-1]["loss"], rtol=1e-4)
    reference = json.loads((expected_run / "run.json").read_text())["history"]["loss"][-1]
    np.testing.assert_allclose(summary["history"]["loss"][-1], reference, rtol=1e-4)
    final, uninterrupted = _weights(str(run)), _weights(str(expected_run))
    assert final.keys() == uninterrupted.keys()
    # Weights, optimizer slots and step, queue and frequency-estimator state.
    assert any("_estimator/mean_gap" in n for n in final) and any(
        "_indices/values" in n for n in final
    )
    for name, value in final.items():
        if value.dtype.kind in "fiu":
            np.testing.assert_allclose(
                value, uninterrupted[name], rtol=1e-4, atol=1e-5, err_msg=name
            )
        else:
            np.testing.assert_array_equal(value, uninterrupted[name], err_msg=name)


# CLRec's queue as docs/negatives.md advises it (momentum-cached), with Multi-CLRec's
# intention queues cached by the same momentum tower.
MOMENTUM = ["negatives.queue_mode=momentum", "negatives.intentions=2"]


@pytest.fixture(scope="module")
def momentum_runs(tiny_dataset, tmp_path_factory):
    """Two workers, then one process on the same global batches."""
    folder = tmp_path_factory.mktemp("momentum")
    args = [*TINY, *MOMENTUM]
    wait_all(
        start_cluster(lambda i: [tiny_dataset, str(folder / "two"), str(folder / f"w{i}"), *args])
    )
    single = [tiny_dataset, str(folder / "one"), str(folder / "one.json"), *args]
    wait_all([start([*single, "training.backup=always"], None)])
    return [_read(folder / f"w{i}") for i in range(2)], _read(folder / "one.json")


def test_momentum_queues_stay_identical_on_both_workers_and_match_one_worker(momentum_runs):
    (first, second), single = momentum_runs
    assert len(first) == len(second) == len(single) == 21
    keys = ("queue_indices", "queue_embeddings", "intention_indices", "intention_embeddings")
    for step, (a, b, c) in enumerate(zip(first, second, single, strict=True)):
        assert a["weights"] == b["weights"] and a["queue_state"] == b["queue_state"], step
        for key in keys:
            assert a[key] == b[key], f"step {step}: {key} differ"
            if key.endswith("indices"):
                assert a[key] == c[key], f"step {step}: {key} differ from one worker's"
            else:
                np.testing.assert_allclose(a[key], c[key], atol=1e-4, err_msg=f"{key} {step}")
        np.testing.assert_allclose(a["loss"], c["loss"], rtol=1e-4, err_msg=f"step {step}")
        np.testing.assert_allclose(a["queue_state"], c["queue_state"], rtol=1e-4, atol=1e-4)
    # Both replicas' positives went into the momentum queue and the intention queues.
    assert sum(i >= 0 for i in first[0]["queue_indices"]) == 8
    assert sum(i >= 0 for queue in first[0]["intention_indices"] for i in queue) == 8
