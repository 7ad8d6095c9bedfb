"""`twotower train`: dataset directory -> run directory.

Run directory layout (see docs/run_directory.md):
  config.yaml        the resolved config
  run.json           dataset path, per-epoch history, throughput, wall time
  checkpoints/       the trained weights (TensorFlow checkpoint)
  logs/              TensorBoard
  metrics.json       written by evaluate
  export/            written by export
"""

import json
import os
import time
from typing import Any

import tensorflow as tf

from trainer.build import build_model, training_callbacks
from trainer.callbacks import Throughput
from trainer.dataset import load_dataset, make_dataset
from trainer.model import TwoTowerModel
from twotower.config import Config, TrainingConfig, load_config, save_config

RUN_FILE = "run.json"
WEIGHTS = os.path.join("checkpoints", "final")


def _optimizer(training: TrainingConfig) -> tf.keras.optimizers.Optimizer:
    optimizers = {
        "adagrad": tf.keras.optimizers.Adagrad,
        "adam": tf.keras.optimizers.Adam,
        "sgd": tf.keras.optimizers.SGD,
    }
    return optimizers[training.optimizer](learning_rate=training.learning_rate)


def train(config: Config, dataset_dir: str, run_dir: str, *, verbose: int = 1) -> dict[str, Any]:
    """Trains the model `config` describes on `dataset_dir` and writes `run_dir`.

    Args:
      config: the validated configuration.
      dataset_dir: a directory written by `twotower preprocess`.
      run_dir: where checkpoints, logs, config and run.json go (created).
      verbose: Keras verbosity (1 progress bar, 2 a line per epoch, 0 silent).

    Returns:
      The contents of run.json.
    """
    tf.keras.utils.set_random_seed(config.training.seed)
    dataset = load_dataset(dataset_dir)
    os.makedirs(run_dir, exist_ok=True)
    save_config(config, run_dir)
    model = build_model(config, dataset)
    model.compile(optimizer=_optimizer(config.training))
    data = make_dataset(
        dataset,
        "train",
        config.training.batch_size,
        shuffle=True,
        seed=config.training.seed,
        shuffle_buffer=config.training.shuffle_buffer,
    )
    callbacks = [
        *training_callbacks(config, model),
        Throughput(config.training.batch_size),
        # Per-step summaries (every 50 steps) carry the IPW weight histograms.
        tf.keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), update_freq=50),
    ]
    start = time.perf_counter()
    history = model.fit(data, epochs=config.training.epochs, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    model.save_weights(os.path.join(run_dir, WEIGHTS))
    summary = {
        "dataset_dir": os.path.abspath(dataset_dir),
        "train_examples": dataset.manifest["splits"]["train"]["examples"],
        "epochs": config.training.epochs,
        "train_seconds": round(seconds, 2),
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
    }
    with open(os.path.join(run_dir, RUN_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def load_run(run_dir: str) -> tuple[Config, Any, TwoTowerModel]:
    """(config, dataset, model with trained weights) of a finished run.

    Raises:
      FileNotFoundError: `run_dir` holds no finished training run.
    """
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no run.json; is {run_dir} a finished `twotower train` run?"
        )
    with open(path) as f:
        run = json.load(f)
    config = load_config(os.path.join(run_dir, "config.yaml"))
    dataset = load_dataset(run["dataset_dir"])
    model = build_model(config, dataset)
    model.load_weights(os.path.join(run_dir, WEIGHTS)).expect_partial()
    return config, dataset, model
