"""A run directory's life: never half-overwritten, resumed only by its own config.

A finished run is `config.yaml` + `checkpoints/` + `run.json` (docs/run_directory.md).
Training into a directory that holds one needs `overwrite`, and even then the old run
stays whole until the new training has finished: its config, weights and run.json are
written into `.commit/` first and moved into place together at the end (`commit`), the
old `run.json` removed first and the new one moved last, so a reader that finds
`run.json` finds the config and weights that go with it. An interrupted training (a
preemption backup under `backup/`) resumes only when the config is the one it was
started with (`backup/config.yaml`); another config needs `overwrite`, which discards it.
"""

import os
import shutil
from typing import Any

import yaml

from common import contracts
from common.config import Config, save_config

STAGING = ".commit"
_CHECKPOINTS = os.path.dirname(contracts.WEIGHTS)
# What a finished run leaves; any of them means "a run is here".
_FINISHED = (contracts.RUN_FILE, contracts.CONFIG_FILE, _CHECKPOINTS)
# Written from the old weights: removed when new ones replace them.
_STALE = (contracts.METRICS_FILE,)


class RunDirectoryInUse(FileExistsError):
    """The run directory holds a finished run or another config's backup."""


def _backup_config(run_dir: str) -> dict[str, Any] | None:
    path = os.path.join(run_dir, contracts.BACKUP_DIR, contracts.CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def prepare(run_dir: str, config: Config, *, overwrite: bool, backup: bool, chief: bool) -> None:
    """Checks `run_dir` before training starts (see the module docstring).

    Args:
      run_dir: the run directory (created).
      config: this training's config.
      overwrite: replace a finished run (at the end) or discard another config's backup.
      backup: this training keeps a preemption backup (its config is recorded there).
      chief: this process writes the run (the others only check).

    Raises:
      RunDirectoryInUse: a finished run without `overwrite`, or a backup of another
        config without `overwrite`.
    """
    found = [name for name in _FINISHED if os.path.exists(os.path.join(run_dir, name))]
    if found and not overwrite:
        raise RunDirectoryInUse(
            f"{run_dir} holds a trained run ({', '.join(found)}); pass --overwrite to replace "
            "it (the old run stays whole until the new training finishes) or choose another "
            "--run-dir"
        )
    backup_dir = os.path.join(run_dir, contracts.BACKUP_DIR)
    # Only the chief judges the backup: the others would race it while it writes the
    # config there (they follow the chief's decision through the cluster).
    if chief and os.path.isdir(backup_dir) and _backup_config(run_dir) != config.to_dict():
        if not overwrite:
            raise RunDirectoryInUse(
                f"{backup_dir}: an interrupted training with another config (or none "
                "recorded) would be resumed; pass --overwrite to discard it and start over"
            )
        shutil.rmtree(backup_dir)
    if chief:
        os.makedirs(run_dir, exist_ok=True)
        shutil.rmtree(os.path.join(run_dir, STAGING), ignore_errors=True)
        if backup:  # written aside and renamed: a reader never sees half a file
            written = save_config(config, os.path.join(run_dir, STAGING, "backup"))
            os.makedirs(backup_dir, exist_ok=True)
            os.replace(written, os.path.join(backup_dir, contracts.CONFIG_FILE))


def staging_weights(run_dir: str) -> str:
    """Where the chief saves the final weights before `commit` moves them into place."""
    return os.path.join(run_dir, STAGING, contracts.WEIGHTS)


def commit(run_dir: str, config: Config, run_json: str) -> None:
    """Publishes the staged weights with `config` and `run_json` (run.json's text).

    Order: the old run.json and what was computed from the old weights go first, then
    config.yaml and checkpoints/ are replaced, and run.json arrives last.
    """
    staging = os.path.join(run_dir, STAGING)
    save_config(config, staging)
    with open(os.path.join(staging, contracts.RUN_FILE), "w") as f:
        f.write(run_json)
        f.flush()
        os.fsync(f.fileno())
    for name in (contracts.RUN_FILE, *_STALE):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)
    os.replace(
        os.path.join(staging, contracts.CONFIG_FILE), os.path.join(run_dir, contracts.CONFIG_FILE)
    )
    shutil.rmtree(os.path.join(run_dir, _CHECKPOINTS), ignore_errors=True)
    os.rename(os.path.join(staging, _CHECKPOINTS), os.path.join(run_dir, _CHECKPOINTS))
    os.replace(os.path.join(staging, contracts.RUN_FILE), os.path.join(run_dir, contracts.RUN_FILE))
    shutil.rmtree(staging, ignore_errors=True)
