"""Export publishes nothing broken (issue 12): a diverged model is refused, every failing
filesystem step leaves TF Serving's view and the manifest on the previous version, and
concurrent exports queue on a lock."""

import errno
import os
import threading

import numpy as np
import pytest
import tensorflow as tf

from common import contracts
from serving.export_version import load_export_version, read_manifest
from tests.conftest import export
from trainer import publish
from trainer.evaluate import eval_queries, item_embeddings
from trainer.export import NonFiniteExport
from trainer.publish import ExportLocked, export_lock
from trainer.train import load_run
from twotower.cli import main


def _poison(run_dir, tower):
    """Writes the run's weights back with `tower`'s first variable all NaN."""
    _, dataset, model = load_run(run_dir)
    item_embeddings(model, dataset.item_ids)  # builds both towers (restoring their weights)
    features = eval_queries(dataset).features
    model.query_embeddings({name: tf.constant(v) for name, v in features.items()})
    variable = getattr(model, tower).trainable_variables[0]
    variable.assign(np.full(variable.shape, np.nan, variable.dtype.as_numpy_dtype))
    model.save_weights(os.path.join(run_dir, contracts.WEIGHTS))


def _served_versions(export_dir):
    """What TF Serving would load: the numeric folders under query_tower/."""
    return publish.versions(os.path.join(export_dir, contracts.QUERY_TOWER_DIR))


def _assert_still_on(export_dir, version):
    assert read_manifest(export_dir)["version"] == version
    assert _served_versions(export_dir)[-1] == version
    for part in (contracts.ITEMS_DIR, contracts.QUERY_TOWER_DIR):
        assert publish.versions(os.path.join(export_dir, part))[-1] == version
    assert load_export_version(export_dir).version == version  # the service can load it
    assert not [n for n in os.listdir(export_dir) if n.startswith(publish.STAGING_PREFIX)]


@pytest.mark.parametrize("tower", ["candidate_tower", "query_tower"])
def test_a_diverged_model_is_refused_and_the_old_version_stays(fresh_run, tower, capsys):
    export(fresh_run)
    export_dir = os.path.join(fresh_run, contracts.EXPORT_DIR)
    _poison(fresh_run, tower)
    with pytest.raises(NonFiniteExport, match="NaN or infinite"):
        export(fresh_run)
    _assert_still_on(export_dir, 1)
    if tower == "query_tower":  # the command once: exit 1, the reason in one line
        assert main(["export", fresh_run]) == 1
        assert "the model diverged, nothing was published" in capsys.readouterr().err
        _assert_still_on(export_dir, 1)


def _failing(real, fail_at, under):
    """`real`, failing at its `fail_at`-th call on a path under `under`."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += str(args[0]).startswith(under)
        if calls["n"] == fail_at and str(args[0]).startswith(under):
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real(*args, **kwargs)

    return wrapper


# Every filesystem step of publishing, in order: the two manifests written into staging,
# the fsync of the staged tree, the renames (items, then the query tower), the swap.
STEPS = [
    ("write_json", 1),
    ("write_json", 2),
    ("fsync_tree", 1),
    ("os.rename", 1),
    ("os.rename", 2),
    ("os.replace", 1),
]


def test_each_failing_publish_step_leaves_the_previous_version(fresh_run, monkeypatch):
    export(fresh_run)
    export_dir = os.path.join(fresh_run, contracts.EXPORT_DIR)
    for step, fail_at in STEPS:
        with monkeypatch.context() as patch:
            if step.startswith("os."):
                name = step.removeprefix("os.")
                patch.setattr(os, name, _failing(getattr(os, name), fail_at, export_dir))
            else:
                real = getattr(publish, step)
                patch.setattr(publish, step, _failing(real, fail_at, export_dir))
            with pytest.raises(OSError, match="injected"):
                export(fresh_run)
        _assert_still_on(export_dir, 1)
    assert export(fresh_run)["version"] == 2  # nothing of the failed tries was left behind
    _assert_still_on(export_dir, 2)


def test_a_held_lock_makes_a_second_export_fail_clearly(fresh_run, capsys):
    export_dir = os.path.join(fresh_run, contracts.EXPORT_DIR)
    with export_lock(export_dir, timeout_s=0):
        with pytest.raises(ExportLocked, match=rf"pid {os.getpid()}\) holds the lock"):
            export(fresh_run, lock_timeout_s=0.3)
        assert main(["export", fresh_run, "--lock-timeout-s=0.3"]) == 138
    err = capsys.readouterr().err
    assert "holds the lock" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(export_dir, contracts.EXPORT_MANIFEST))


def test_a_waiting_export_proceeds_once_the_lock_is_released(fresh_run):
    export_dir = os.path.join(fresh_run, contracts.EXPORT_DIR)
    held, release = threading.Event(), threading.Event()

    def hold():
        with export_lock(export_dir, timeout_s=0):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    threading.Timer(1.0, release.set).start()
    assert export(fresh_run, lock_timeout_s=60)["version"] == 1
    holder.join()


def test_stale_staging_of_a_crashed_export_is_removed(fresh_run):
    export_dir = os.path.join(fresh_run, contracts.EXPORT_DIR)
    stale = os.path.join(export_dir, f"{publish.STAGING_PREFIX}1-99999", "query_tower")
    os.makedirs(stale)
    assert export(fresh_run)["version"] == 1
    _assert_still_on(export_dir, 1)
