"""Process environment that must be in place before TensorFlow is first imported.

TFRS 0.7.7 needs Keras 2 (`tf_keras`), which TensorFlow 2.16+ only gives when
`TF_USE_LEGACY_KERAS=1` is set before `tf.keras` is first touched. Every entry point
(the CLI, each package's `__init__`, the test suite's conftest) imports this module first.
"""

import os
import sys

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"


class KerasVersionError(RuntimeError):
    """TensorFlow was already imported and bound to Keras 3."""


def ensure_legacy_keras() -> None:
    """Selects Keras 2 for `tf.keras`, or fails if it is too late to do so.

    Raises:
      KerasVersionError: if `tf.keras` was already resolved to Keras 3 in this process.
    """
    os.environ[LEGACY_KERAS_VARIABLE] = "1"
    # Quieter TensorFlow start-up; a user's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    # `tf.keras` is a lazy loader that reads the variable on first use, so an early
    # `import tensorflow` is harmless as long as nothing touched `tf.keras` yet.
    layer_module = tf.keras.layers.Layer.__module__
    if not layer_module.startswith("tf_keras"):
        raise KerasVersionError(
            "twotower needs Keras 2 (tf_keras), but TensorFlow was imported and tf.keras "
            f"was bound to Keras 3 ({layer_module}) before twotower was imported. Set "
            f"{LEGACY_KERAS_VARIABLE}=1 in the environment, or import twotower before "
            "using tf.keras."
        )


ensure_legacy_keras()
