"""Keras callbacks the trainer adds to `fit`."""

import time
from typing import Any

import tensorflow as tf


class Throughput(tf.keras.callbacks.Callback):
    """Logs examples/second and steps/second per epoch into the Keras logs.

    Keras reports ms/step on the progress bar but keeps no number a run can save;
    this puts both rates into `history` and TensorBoard (callbacks after it see them).
    """

    def __init__(self, batch_size: int, steps_per_execution: int = 1):
        super().__init__()
        self._batch_size = batch_size
        self._per_call = steps_per_execution
        self._start = 0.0
        self._steps = 0
        self._last: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._steps = 0
        self._last = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # With steps_per_execution > 1 Keras calls this once per call, `batch` being the
        # call's last step.
        self._steps += self._per_call if self._last is None else batch - self._last
        self._last = batch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = max(time.perf_counter() - self._start, 1e-9)
        if logs is not None:
            logs["steps_per_second"] = self._steps / seconds
            logs["examples_per_second"] = self._steps * self._batch_size / seconds
