import numpy as np
import pytest
import tensorflow as tf

from trainer.exposure import ExposurePropensity


def test_log_propensity_is_smoothed_exposures_per_request():
    layer = ExposurePropensity(["a", "b"], [9, 1], requests=10, smoothing=1.0)
    got = layer(tf.constant([["a", "b"], ["never", ""]])).numpy()
    # (9 + 1) / (10 + 1), (1 + 1) / 11; never shown (and padding): 1 / 11
    np.testing.assert_allclose(got, np.log([[10 / 11, 2 / 11], [1 / 11, 1 / 11]]), rtol=1e-6)
    tight = ExposurePropensity(["a"], [9], requests=10, smoothing=0.01)
    # A smaller pseudo-count makes never-shown items vanish from a softmax: e^-7 here.
    gap = float(tight(tf.constant(["a"]))[0] - tight(tf.constant(["x"]))[0])
    assert gap == pytest.approx(np.log(9.01 / 0.01), rel=1e-5)


def test_config_round_trip_and_bad_arguments():
    layer = ExposurePropensity(["a", "b"], [3, 2], requests=5, smoothing=0.5, name="exposure")
    clone = ExposurePropensity.from_config(layer.get_config())
    ids = tf.constant(["a", "b", "c"])
    np.testing.assert_array_equal(clone(ids).numpy(), layer(ids).numpy())
    with pytest.raises(ValueError, match="2 items but 1 exposure counts"):
        ExposurePropensity(["a", "b"], [1], requests=5)
    with pytest.raises(ValueError, match="smoothing > 0"):
        ExposurePropensity(["a"], [1], requests=5, smoothing=0)
