"""Training never publishes a diverged or half-overwritten run (issue 12's training part):
a non-finite loss stops it naming the step; a finished run is replaced only with
--overwrite and only once the new training finished; an interrupted retrain leaves the
old run loadable; run.json counts the examples actually read; shards are verified.
(Op determinism: tests/test_reproducible.py.)"""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from common import contracts
from common.config import load_config, save_config
from tests.trainer.test_training_settings import SMALL as SETTINGS_SMALL
from trainer.callbacks import TrainingDiverged
from trainer.run_dir import RunDirectoryInUse
from trainer.train import load_run, train
from twotower.cli import main

SMALL = [*SETTINGS_SMALL, "training.epochs=1"]
# Plain SGD at this rate overflows the float32 weights within a few steps.
DIVERGING = ["training.optimizer=sgd", "training.learning_rate=1e30"]


def _config(*overrides):
    return load_config(overrides=[*SMALL, *overrides])


def _weights(run_dir):
    """Every tensor of the run's final checkpoint, by name (after load_run reads it)."""
    load_run(run_dir)
    reader = tf.train.load_checkpoint(os.path.join(run_dir, contracts.WEIGHTS))
    names = reader.get_variable_to_shape_map()
    skip = ("examples_read", "_CHECKPOINTABLE_OBJECT_GRAPH")  # a counter; Keras layer names
    return {n: reader.get_tensor(n) for n in names if not any(s in n for s in skip)}


def test_a_non_finite_loss_stops_training_naming_the_step_and_writes_nothing(
    tiny_dataset, tmp_path, capsys
):
    run_dir = str(tmp_path / "run")
    sets = [f"--set={o}" for o in [*SMALL, *DIVERGING]]
    code = main(["train", "--data", tiny_dataset, "--run-dir", run_dir, "--verbose=0", *sets])
    assert code == 1
    err = capsys.readouterr().err
    assert re.search(r"is (nan|inf|-inf) at step \d+ \(epoch 1, batch \d+\)", err), err
    assert "no checkpoint written" in err
    assert not os.path.exists(os.path.join(run_dir, contracts.RUN_FILE))
    assert not os.path.exists(os.path.join(run_dir, "checkpoints"))
    assert not os.path.exists(os.path.join(run_dir, contracts.CONFIG_FILE))


def test_a_diverged_retrain_leaves_the_finished_run_as_it_was(tiny_dataset, tmp_path):
    run_dir = str(tmp_path / "run")
    first = train(_config(), tiny_dataset, run_dir, verbose=0)
    before = _weights(run_dir)
    with pytest.raises(TrainingDiverged):
        train(_config(*DIVERGING), tiny_dataset, run_dir, verbose=0, overwrite=True)
    with open(os.path.join(run_dir, contracts.RUN_FILE)) as f:
        assert json.load(f) == json.loads(json.dumps(first))
    after = _weights(run_dir)
    assert all(np.array_equal(before[name], after[name]) for name in before)


def test_a_finished_run_is_replaced_only_with_overwrite(tiny_dataset, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    run = train(_config(), tiny_dataset, run_dir, verbose=0)
    assert run["examples_read"] == run["train_examples"] > 0  # what the steps consumed
    with pytest.raises(RunDirectoryInUse, match="pass --overwrite"):
        train(_config("model.output_dim=4"), tiny_dataset, run_dir, verbose=0)
    sets = [f"--set={o}" for o in [*SMALL, "model.output_dim=4"]]
    args = ["train", "--data", tiny_dataset, "--run-dir", run_dir, "--verbose=0", *sets]
    assert main(args) == 1
    assert "holds a trained run" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    config, _, _ = load_run(run_dir)  # the new checkpoints load under the new shapes
    assert config.model.output_dim == 4
    assert not os.path.exists(os.path.join(run_dir, ".commit"))


class _Interrupt(tf.keras.callbacks.Callback):
    """Stops `fit` mid-epoch as SIGTERM would (an exception out of the training loop)."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise KeyboardInterrupt


def test_an_interrupted_retrain_with_another_config_keeps_the_old_run_loadable(
    tiny_dataset, tmp_path
):
    run_dir = str(tmp_path / "run")
    train(_config(), tiny_dataset, run_dir, verbose=0)
    before = _weights(run_dir)
    with pytest.raises(KeyboardInterrupt):
        train(
            _config("model.output_dim=4", "model.embedding_dim=4"),
            tiny_dataset,
            run_dir,
            verbose=0,
            overwrite=True,
            callbacks=[_Interrupt()],
        )
    config, _, _ = load_run(run_dir)  # the old config with the old checkpoints: no shape error
    assert config.model.output_dim == 8
    after = _weights(run_dir)
    assert all(np.array_equal(before[name], after[name]) for name in before)


def test_a_backup_of_another_config_is_not_resumed_without_overwrite(tiny_dataset, tmp_path):
    run_dir = str(tmp_path / "run")
    backup = os.path.join(run_dir, contracts.BACKUP_DIR)
    save_config(_config("model.output_dim=4"), backup)  # an interrupted run's record
    with pytest.raises(RunDirectoryInUse, match="another config"):
        train(_config("training.backup=always"), tiny_dataset, run_dir, verbose=0)
    run = train(_config("training.backup=always"), tiny_dataset, run_dir, verbose=0, overwrite=True)
    assert run["epochs"] == 1
    assert not os.path.exists(backup)  # a finished run keeps no backup


def test_a_backup_of_the_same_config_resumes_without_overwrite(tiny_dataset, tmp_path):
    run_dir = str(tmp_path / "run")
    config = _config("training.backup=always", "training.backup_every_steps=1")
    with pytest.raises(KeyboardInterrupt):
        train(config, tiny_dataset, run_dir, verbose=0, callbacks=[_Interrupt()])
    assert os.path.exists(os.path.join(run_dir, contracts.BACKUP_DIR, contracts.CONFIG_FILE))
    run = train(config, tiny_dataset, run_dir, verbose=0)
    assert run["distribution"]["resumed_at_step"] > 0


@pytest.mark.parametrize(
    "negatives",
    [
        [],
        ["negatives.corpus=4", "negatives.space_c=3"],
        ["model.item_id_dropout=0.5"],
        # The momentum tower, its lazy rows' clocks and the queues it fills (Multi-CLRec's
        # intention queues included) continue where the backup left them.
        ["negatives.queue_size=8", "negatives.queue_mode=momentum", "negatives.intentions=2"],
    ],
    ids=["none", "sampled", "id_dropout", "momentum_intentions"],
)
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    tiny_dataset, tmp_path, negatives
):
    # The sampled sources draw from (seed, step), the step saved in the backup, and the
    # item tower's id dropout from (seed, its count of draws): the resumed run continues
    # their streams (stateful draws would start them again).
    config = _config("training.backup=always", "training.backup_every_steps=1", *negatives)
    train(config, tiny_dataset, str(tmp_path / "whole"), verbose=0)
    run_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config, tiny_dataset, run_dir, verbose=0, callbacks=[_Interrupt()])
    assert train(config, tiny_dataset, run_dir, verbose=0)["distribution"]["resumed_at_step"] > 0
    whole, resumed = _weights(str(tmp_path / "whole")), _weights(run_dir)
    assert whole.keys() == resumed.keys()
    sampled = any(n.startswith("negatives.") for n in negatives)
    assert any(n.startswith("sources/") and "_step" in n for n in whole) == sampled
    assert any("_dropout_draws" in n for n in whole) == ("id_dropout" in str(negatives))
    for name, value in whole.items():
        np.testing.assert_allclose(resumed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def _listing_more(tiny_dataset, tmp_path, extra):
    """A copy of the dataset whose manifest lists `extra` more train examples than its
    shards hold, as if a shard had lost them after its checksum was taken."""
    dataset = str(tmp_path / "dataset")
    shutil.copytree(tiny_dataset, dataset)
    path = os.path.join(dataset, contracts.MANIFEST_FILE)
    with open(path) as f:
        manifest = json.load(f)
    manifest["splits"]["train"]["examples"] += extra
    with open(path, "w") as f:
        json.dump(manifest, f)
    return dataset


def test_fewer_examples_than_the_manifest_lists_fail_the_run(tiny_dataset, tmp_path):
    dataset = _listing_more(tiny_dataset, tmp_path, 5)
    run_dir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="training read \\d+ examples in 1 epochs"):
        train(_config(), dataset, run_dir, verbose=0)
    assert not os.path.exists(os.path.join(run_dir, contracts.RUN_FILE))


def test_with_full_batches_only_a_cut_larger_than_the_remainder_fails(tiny_dataset, tmp_path):
    # training.drop_remainder: each epoch reads the examples rounded down to whole batches.
    dataset = _listing_more(tiny_dataset, tmp_path, 16)  # a whole batch lost
    with pytest.raises(
        ValueError, match=r"in 1 epochs, the manifest lists \(in full batches of 16"
    ):
        train(_config("training.drop_remainder=true"), dataset, str(tmp_path / "run"), verbose=0)


def test_a_truncated_shard_fails_training_naming_it(tiny_dataset, tmp_path, capsys):
    dataset = str(tmp_path / "dataset")
    shutil.copytree(tiny_dataset, dataset)
    with open(os.path.join(dataset, contracts.MANIFEST_FILE)) as f:
        shard = json.load(f)["splits"]["train"]["shards"][0]["file"]
    path = os.path.join(dataset, shard)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # a copy cut short
    run_dir = str(tmp_path / "run")
    sets = [f"--set={o}" for o in SMALL]
    code = main(["train", "--data", dataset, "--run-dir", run_dir, "--verbose=0", *sets])
    assert code == 1
    assert f"{path}: {len(data) // 2} bytes, the manifest recorded {len(data)}" in (
        capsys.readouterr().err
    )
    assert not os.path.exists(os.path.join(run_dir, contracts.RUN_FILE))
