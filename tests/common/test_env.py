import os
import subprocess
import sys

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("first", ["import twotower", "import trainer", "import pipelines"])
def test_every_package_selects_keras_2(first):
    done = _run(f"{first}\nimport tensorflow as tf\nprint(tf.keras.layers.Layer.__module__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("tf_keras")


def test_early_tensorflow_without_keras_is_still_fine():
    done = _run("import tensorflow as tf\nimport twotower\nprint(tf.keras.layers.Layer.__module__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("tf_keras")


def test_keras_3_bound_before_import_is_a_clear_error():
    done = _run("import tensorflow as tf\ntf.keras.layers.Dense(1)\nimport twotower")
    assert done.returncode != 0
    assert "KerasVersionError" in done.stderr
    assert "TF_USE_LEGACY_KERAS=1" in done.stderr
