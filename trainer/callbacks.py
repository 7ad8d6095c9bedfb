"""Keras callbacks the trainer adds to `fit`."""

import time
from typing import Any

import numpy as np
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


class TrainingDiverged(ValueError):
    """The loss or the weights stopped being finite; the message names the step."""


class StopOnNonFinite(tf.keras.callbacks.Callback):
    """Raises `TrainingDiverged` on the first non-finite loss, and at each epoch's end on
    non-finite weights, so that `fit` ends with an error and no final checkpoint is saved.

    Keras's `TerminateOnNaN` only sets `stop_training`: `fit` then returns normally and
    the trainer would save and publish the diverged weights. With steps_per_execution > 1
    Keras reports once per call, so the step named is the call's last.
    """

    def __init__(self, steps_per_execution: int = 1):
        super().__init__()
        self._per_call = steps_per_execution
        self._epoch = 0
        self._step = 0
        self._last: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._last = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._step += self._per_call if self._last is None else batch - self._last
        self._last = batch
        for name in ("loss", "total_loss"):
            value = (logs or {}).get(name)
            if value is not None and not np.isfinite(value):
                raise TrainingDiverged(
                    f"{name} is {float(value)} at step {self._step} (epoch {self._epoch + 1}, "
                    f"batch {batch + 1}); training stopped, no checkpoint written (lower "
                    "training.learning_rate, or check the data)"
                )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        check_finite_weights(self.model, f"after epoch {epoch + 1} (step {self._step})")


def check_finite_weights(model: tf.keras.Model, when: str) -> None:
    """Raises `TrainingDiverged` naming the first variable of `model` that holds a NaN or
    an infinity (one pass over the weights: call it per epoch, not per step)."""
    for variable in model.weights:
        if variable.dtype.is_floating and not bool(
            tf.reduce_all(tf.math.is_finite(variable)).numpy()
        ):
            raise TrainingDiverged(
                f"weights {variable.name} hold non-finite values {when}; training stopped, "
                "no checkpoint written"
            )


class TensorBoard(tf.keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback without its cost on the steps it records nothing.

    Once any callback has batch hooks, Keras calls every callback's, and TensorBoard then
    writes each log as a batch summary under `record_if(step % update_freq == 0)`. On the
    other steps (every step with `update_freq="epoch"`) those writes are no-ops that still
    cost about 0.6 ms of Python per step on 2 CPU cores (cProfile of the ids-only model,
    whose whole step is 3.5 ms). This skips the call when Keras would record nothing: the
    same condition, checked once per step instead of once per log.
    """

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._records_this_batch():
            super().on_train_batch_end(batch, logs)

    def _records_this_batch(self) -> bool:
        # Keras's own per-batch work: the graph (first batch), profiling, steps/second.
        if self._should_write_train_graph or self._should_trace or self.write_steps_per_second:
            return True
        if self.update_freq == "epoch":
            return False
        # `_train_step` is the model's train counter, what Keras's record_if reads.
        return int(self._train_step.numpy()) % self.update_freq == 0
