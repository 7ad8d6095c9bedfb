"""`twotower train`: dataset directory -> run directory.

Run directory layout (see docs/run_directory.md):
  config.yaml        the resolved config
  run.json           dataset path, per-epoch history, throughput, examples read, wall time
  checkpoints/       the trained weights (TensorFlow checkpoint)
  logs/              TensorBoard
  backup/            BackupAndRestore state and its config while training (removed when
                     it finishes; docs/distributed.md)
  .commit/           the new config, weights and run.json until they replace the old
                     together (`trainer.run_dir`)

A run stops with `TrainingDiverged` (exit 1) on a non-finite loss or weights; nothing of
it is published then, and a finished run in the same directory stays as it was.
  metrics.json       written by evaluate
  export/            written by export
"""

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow as tf

from common import contracts
from common.config import Config, ConfigError, TrainingConfig, load_config
from trainer import run_dir as run_directory
from trainer.build import build_model, training_callbacks
from trainer.callbacks import StopOnNonFinite, TensorBoard, Throughput, check_finite_weights
from trainer.dataset import Dataset, load_dataset, make_dataset, parallel_reads, verify_shards
from trainer.distribute import (
    Placement,
    placement,
    remove_worker_dir,
    worker_dir,
    worker_local_strings,
)
from trainer.model import TwoTowerModel
from trainer.optimizers import make_optimizer
from trainer.table_sizes import check_budget, table_sizes

_LOG = logging.getLogger("twotower.train")


@contextlib.contextmanager
def precision(training: TrainingConfig) -> Iterator[None]:
    """Builds under Keras's mixed_float16 policy when `training.mixed_precision` (float16
    compute, float32 weights and tower outputs), restoring the policy after."""
    if not training.mixed_precision:
        yield
        return
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def _shard_mode(training: TrainingConfig, num_files: int, num_workers: int) -> str:
    """ "file" (each worker reads its own shards) or "data" (each keeps its rows)."""
    if training.shard == "file" and num_files < num_workers:
        raise ConfigError(
            f"training.shard: file sharding needs a train shard per worker, got {num_files} "
            f"shards for {num_workers} workers (use data or auto)"
        )
    if training.shard != "auto":
        return training.shard
    if num_files >= num_workers:
        return "file"
    _LOG.warning(
        "%d train shards for %d workers: sharding by record (every worker reads all data)",
        num_files,
        num_workers,
    )
    return "data"


def _with_files(dataset: Dataset, files: list[str]) -> Dataset:
    splits = dict(dataset.manifest["splits"])
    splits["train"] = {**splits["train"], "files": files}
    return dataclasses.replace(dataset, manifest={**dataset.manifest, "splits": splits})


def _resumable_input(
    dataset: Dataset,
    training: TrainingConfig,
    where: Placement,
    mode: str,
    skip_steps: int,
    features: Sequence[str] | None = None,
    lookups: Any = None,
) -> Any:
    """An endless stream of global batches, `skip_steps` already consumed, split over
    the workers; the same stream whichever step a run resumes at."""
    files = [os.path.relpath(f, dataset.directory) for f in dataset.files("train")]
    local_replicas = where.replicas // where.num_workers

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        workers, index = context.num_input_pipelines, context.input_pipeline_id
        per_worker = where.per_replica_batch * local_replicas
        options = {"shuffle": True, "seed": training.seed, "drop_remainder": True}
        options["shuffle_buffer"] = training.shuffle_buffer
        options["cache"] = training.cache
        options["parallel"] = parallel_reads(training.parallel_reads)
        options["features"] = features
        options["index"] = lookups  # the model's vocabulary lookups, in the input pipeline
        if mode == "file":
            shard = _with_files(dataset, files[index::workers])
            data = make_dataset(shard, "train", per_worker, **options)
        else:
            data = make_dataset(dataset, "train", where.global_batch, **options)
            rows = slice(index * per_worker, (index + 1) * per_worker)
            data = data.map(lambda batch: {k: v[rows] for k, v in batch.items()})
        data = data.repeat().skip(skip_steps)
        if local_replicas > 1:
            data = data.rebatch(where.per_replica_batch, drop_remainder=True)
        return data.prefetch(tf.data.AUTOTUNE)

    if where.replicas == 1 and not where.multi_worker:
        return dataset_fn(tf.distribute.InputContext())
    return where.strategy.distribute_datasets_from_function(dataset_fn)


def resume_step(backup_dir: str, steps_per_epoch: int) -> int:
    """Training steps a BackupAndRestore backup in `backup_dir` holds (0 without one)."""
    path = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if not path:
        return 0
    reader = tf.train.load_checkpoint(path)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    return max(epoch, 0) * steps_per_epoch + batch + 1 if batch >= 0 else 0


def train(
    config: Config,
    dataset_dir: str,
    run_dir: str,
    *,
    verbose: int = 1,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Trains the model `config` describes on `dataset_dir` and writes `run_dir`.

    Under TF_CONFIG every worker runs this; only the chief writes config, weights and
    run.json (the others save into temporary folders that are removed). With a backup
    (`training.backup`), a restarted run resumes mid-epoch from `run_dir/backup`.

    Args:
      config: the validated configuration.
      dataset_dir: a directory written by `twotower preprocess`.
      run_dir: where checkpoints, logs, config and run.json go (created).
      verbose: Keras verbosity (1 progress bar, 2 a line per epoch, 0 silent).
      callbacks: extra Keras callbacks for `fit`.
      overwrite: replace a finished run in `run_dir` (once this one has finished) or
        discard an interrupted training of another config (`trainer.run_dir`).

    Returns:
      The contents of run.json.

    Raises:
      ConfigError: a bad TF_CONFIG, or a batch size or sharding the cluster cannot take.
      CorruptDataset: a shard differs from the size or checksum in the manifest.
      RunDirectoryInUse: `run_dir` holds a run and `overwrite` is False.
      TrainingDiverged: a non-finite loss or weights (nothing is written then).
      ValueError: fewer examples read than the manifest lists (a truncated shard).
    """
    where = placement(config.training)  # first: multi-worker must configure TF first
    _LOG.info("%s", where.describe())
    with op_determinism(config.training.deterministic):
        return _train(config, dataset_dir, run_dir, where, verbose, callbacks, overwrite)


@contextlib.contextmanager
def op_determinism(on: bool) -> Iterator[None]:
    """TensorFlow's op determinism for the duration of a training when `on` (restored
    after: `tf.config.experimental.enable_op_determinism` is process-wide and has no
    public undo, so this uses the internal pair TensorFlow's own tests use)."""
    from tensorflow.python.framework import config as tf_config  # noqa: PLC0415

    before = tf_config.is_op_determinism_enabled()
    if on and not before:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if on and not before:
            tf_config.disable_op_determinism()


def _train(
    config: Config,
    dataset_dir: str,
    run_dir: str,
    where: Placement,
    verbose: int,
    callbacks: Sequence[tf.keras.callbacks.Callback],
    overwrite: bool,
) -> dict[str, Any]:
    """`train`'s work, once the placement is known (see `train`)."""
    tf.keras.utils.set_random_seed(config.training.seed)
    dataset = load_dataset(dataset_dir)
    verify_shards(dataset)  # a cut or replaced shard fails here, naming it
    examples = dataset.manifest["splits"]["train"]["examples"]
    if config.training.drop_remainder and examples < config.training.batch_size:
        raise ConfigError(
            f"training.drop_remainder=true: the train split's {examples} examples make "
            f"no full batch of training.batch_size={config.training.batch_size}"
        )
    backup = config.training.backup == "always" or (
        config.training.backup == "auto" and where.multi_worker
    )
    run_directory.prepare(run_dir, config, overwrite=overwrite, backup=backup, chief=where.is_chief)
    with where.strategy.scope(), worker_local_strings(where), precision(config.training):
        model = build_model(config, dataset)
        optimizer = make_optimizer(
            config.training.optimizer, where.learning_rate, config.training.jit_compile
        )
        if config.training.mixed_precision:
            optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
        model.compile(
            optimizer=optimizer,
            steps_per_execution=config.training.steps_per_execution,
            jit_compile=config.training.jit_compile,
        )
    sizes = table_sizes(model, config.training.optimizer)
    budget_warning = check_budget(sizes, config.training.memory_budget_gb)
    steps_per_epoch, skipped, shard = None, 0, None
    if backup or where.replicas > 1:
        steps_per_epoch = max(1, examples // where.global_batch)
        shard = _shard_mode(config.training, len(dataset.files("train")), where.num_workers)
        backup_dir = os.path.join(run_dir, contracts.BACKUP_DIR)
        skipped = resume_step(backup_dir, steps_per_epoch) if backup else 0
        data = _resumable_input(
            dataset,
            config.training,
            where,
            shard,
            skipped,
            model.input_features,
            model.index_features,
        )
    else:
        data = make_dataset(
            dataset,
            "train",
            config.training.batch_size,
            shuffle=True,
            seed=config.training.seed,
            shuffle_buffer=config.training.shuffle_buffer,
            cache=config.training.cache,
            features=model.input_features,
            index=model.index_features,
            parallel=parallel_reads(config.training.parallel_reads),
            drop_remainder=config.training.drop_remainder,
        )
        if config.training.steps_per_execution > 1:
            # Keras needs the epoch's length to run several steps per call.
            steps_per_epoch = max(1, examples // config.training.batch_size)
            data = data.repeat()
    fit_callbacks = [
        StopOnNonFinite(config.training.steps_per_execution),  # first: before any backup
        *training_callbacks(config, model),
        Throughput(config.training.batch_size, config.training.steps_per_execution),
        # Per-step summaries (training.summary_every_steps) carry the IPW weight histograms.
        TensorBoard(
            os.path.join(run_dir, contracts.LOGS_DIR),
            update_freq=config.training.summary_every_steps or "epoch",
        ),
        *callbacks,
    ]
    if backup:
        fit_callbacks.append(
            tf.keras.callbacks.BackupAndRestore(
                backup_dir, save_freq=config.training.backup_every_steps
            )
        )
    start = time.perf_counter()
    with _xla_errors(config.training.jit_compile):
        history = model.fit(
            data,
            epochs=config.training.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=fit_callbacks,
            verbose=verbose,
        )
    seconds = time.perf_counter() - start
    check_finite_weights(model, "at the end of training")
    examples_read = int(model.examples_read.numpy())
    if steps_per_epoch is None and not model.stop_training:
        _check_examples_read(
            dataset,
            examples_read,
            config.training.epochs,
            config.training.batch_size if config.training.drop_remainder else None,
        )
    if where.is_chief:
        model.save_weights(run_directory.staging_weights(run_dir))
    else:  # every worker must save (variables sync on save); only the chief's is kept
        weights = worker_dir(run_dir, where)
        model.save_weights(os.path.join(weights, contracts.WEIGHTS))
        remove_worker_dir(weights, where)
    summary = {
        "dataset_dir": os.path.abspath(dataset_dir),
        "train_examples": examples,
        "examples_read": examples_read,
        "tables": {
            **table_sizes(model, config.training.optimizer),  # all variables built now
            "memory_budget_warning": budget_warning,
        },
        "epochs": config.training.epochs,
        "train_seconds": round(seconds, 2),
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "distribution": {
            "strategy": type(where.strategy).__name__,
            "workers": where.num_workers,
            "replicas": where.replicas,
            "global_batch": where.global_batch,
            "per_replica_batch": where.per_replica_batch,
            "learning_rate": where.learning_rate,
            "shard": shard,
            "steps_per_epoch": steps_per_epoch,
            "resumed_at_step": skipped,
        },
    }
    if where.is_chief:
        run_directory.commit(run_dir, config, json.dumps(summary, indent=2))
        if backup:
            # BackupAndRestore removed its checkpoints; the finished run keeps no backup.
            shutil.rmtree(os.path.join(run_dir, contracts.BACKUP_DIR), ignore_errors=True)
    return summary


@contextlib.contextmanager
def _xla_errors(jit_compile: bool) -> Iterator[None]:
    """A step XLA cannot compile (`training.jit_compile`) fails in Keras's first call
    with a graph error; it becomes a ConfigError naming the setting and what failed."""
    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        if not jit_compile or "tf2xla conversion failed" not in error.message:
            raise
        ops = sorted(set(re.findall(r"(\w+) \(No registered '", error.message)))
        node = re.search(r"Detected at node (\S+)", error.message)
        what = f"ops {', '.join(ops)}" if ops else f"node {node.group(1) if node else '?'}"
        raise ConfigError(
            "training.jit_compile=true: XLA cannot compile this model's training step "
            f"({what}); set training.jit_compile=false (docs/performance.md lists the "
            "recipes that compile)"
        ) from error


def _check_examples_read(
    dataset: Dataset, read: int, epochs: int, full_batches_of: int | None = None
) -> None:
    """Raises ValueError when one-pass-per-epoch training read fewer or more examples than
    the manifest lists (a shard cut short after its checksum was taken, or replaced).

    With `full_batches_of` (training.drop_remainder) each epoch reads the manifest's
    examples rounded down to whole batches: a cut larger than the remainder still shows.
    """
    examples = dataset.manifest["splits"]["train"]["examples"]
    if full_batches_of:
        examples -= examples % full_batches_of
    expected = examples * epochs
    if read != expected:
        listed = "lists" if not full_batches_of else f"lists (in full batches of {full_batches_of})"
        raise ValueError(
            f"{dataset.directory}: training read {read} examples in {epochs} epochs, the "
            f"manifest {listed} {expected}; a train shard is shorter or longer than when it "
            "was written (run `twotower preprocess` again)"
        )


def load_run(run_dir: str) -> tuple[Config, Any, TwoTowerModel]:
    """(config, dataset, model with trained weights) of a finished run.

    Raises:
      FileNotFoundError: `run_dir` holds no finished training run.
    """
    path = os.path.join(run_dir, contracts.RUN_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no run.json; is {run_dir} a finished `twotower train` run?"
        )
    with open(path) as f:
        run = json.load(f)
    config = load_config(os.path.join(run_dir, contracts.CONFIG_FILE))
    dataset = load_dataset(run["dataset_dir"])
    model = build_model(config, dataset)
    model.load_weights(os.path.join(run_dir, contracts.WEIGHTS)).expect_partial()
    return config, dataset, model
