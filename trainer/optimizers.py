"""Optimizers whose step costs what the batch touched, not what the tables hold.

An embedding table's gradient is sparse (the rows a batch looked up). Keras's current
optimizers turn it dense for SGD and Adam: on a 1M-row table one SGD step took 344 ms
and one Adam step 474 ms against 2 ms with a sparse update (`twotower bench train`'s
optimizer check, docs/performance.md). The legacy (OptimizerV2) Adagrad and SGD apply
sparse gradients with fused scatter kernels; Adam's own sparse rule still decays both
moments of every row each step, so `adam` here is the lazy variant (moments and weights
of the touched rows only), as in TensorFlow Addons' LazyAdam, which is not part of our
stack (TFA is end-of-life).
"""

from typing import Any

import tensorflow as tf

OPTIMIZERS = ("adagrad", "adam", "sgd")


def _coefficients(
    optimizer: tf.keras.optimizers.legacy.Optimizer, var: tf.Variable, apply_state: Any
) -> dict[str, tf.Tensor]:
    """The step's hyperparameters for `var` (learning rate, ...), as OptimizerV2's own
    update rules read them."""
    device, dtype = var.device, var.dtype.base_dtype
    return (apply_state or {}).get((device, dtype)) or optimizer._fallback_apply_state(
        device, dtype
    )


class LazyAdam(tf.keras.optimizers.legacy.Adam):
    """Adam that updates, for a sparse gradient, only the rows it names.

    Dense gradients (the MLPs) follow Adam exactly; a sparse one updates m, v and the
    weights of its rows alone, so rows a step did not see keep their moments.
    """

    def _resource_apply_sparse(
        self, grad: tf.Tensor, var: tf.Variable, indices: tf.Tensor, apply_state: Any = None
    ) -> tf.Operation:
        # OptimizerV2 sums repeated indices before calling this (unique rows here).
        coefficients = _coefficients(self, var, apply_state)
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        m_rows = (
            coefficients["beta_1_t"] * m.sparse_read(indices)
            + coefficients["one_minus_beta_1_t"] * grad
        )
        v_rows = coefficients["beta_2_t"] * v.sparse_read(indices) + coefficients[
            "one_minus_beta_2_t"
        ] * tf.square(grad)
        # coefficients["lr"] carries Adam's bias correction for this step.
        step = coefficients["lr"] * m_rows / (tf.sqrt(v_rows) + coefficients["epsilon"])
        # Variable.scatter_* (not OptimizerV2's helpers, which read the whole variable
        # back after writing: a copy of the table each step).
        return tf.group(
            m.scatter_update(tf.IndexedSlices(m_rows, indices)),
            v.scatter_update(tf.IndexedSlices(v_rows, indices)),
            var.scatter_sub(tf.IndexedSlices(step, indices)),
        )


class ScatterAdagrad(tf.keras.optimizers.legacy.Adagrad):
    """Adagrad whose sparse update is written with scatters, for steps compiled by XLA
    (`training.jit_compile`): the fused ResourceSparseApplyAdagradV2 kernel the legacy
    Adagrad calls has no XLA version. The same rule on the touched rows:
    accum += g², var -= lr·g / (√accum + ε)."""

    def _resource_apply_sparse(
        self, grad: tf.Tensor, var: tf.Variable, indices: tf.Tensor, apply_state: Any = None
    ) -> tf.Operation:
        # OptimizerV2 sums repeated indices before calling this (unique rows here).
        coefficients = _coefficients(self, var, apply_state)
        accumulator = self.get_slot(var, "accumulator")
        rows = accumulator.sparse_read(indices) + tf.square(grad)
        step = coefficients["lr_t"] * grad / (tf.sqrt(rows) + coefficients["epsilon"])
        return tf.group(
            accumulator.scatter_update(tf.IndexedSlices(rows, indices)),
            var.scatter_sub(tf.IndexedSlices(step, indices)),
        )


def make_optimizer(
    name: str, learning_rate: float, jit_compile: bool = False
) -> tf.keras.optimizers.legacy.Optimizer:
    """The optimizer `training.optimizer` names, with sparse-cost updates that XLA
    compiles when `jit_compile`.

    Raises:
      ValueError: an unknown name.
    """
    optimizers = {
        "adagrad": ScatterAdagrad if jit_compile else tf.keras.optimizers.legacy.Adagrad,
        "adam": LazyAdam,
        "sgd": tf.keras.optimizers.legacy.SGD,
    }
    if name not in optimizers:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    return optimizers[name](learning_rate=learning_rate)
