"""Keras's seed streams across the threads that build a model's layers."""

import random

from tf_keras.src import backend as keras_backend


def align_seed_streams() -> None:
    """Brings Python's `random` to where Keras's seed stream of this thread is.

    Unseeded Keras initializers draw their seeds, when a layer is first built, from a
    per-thread stream that `tf.keras.utils.set_random_seed` starts equal to Python's
    `random`. A model may build some layers when it is made, in this thread (the
    momentum queue's `bind` builds the item towers); the rest are built in the first
    training step, which under a distribution strategy runs in a replica thread: that
    thread has no Keras stream and draws from `random` instead. Unaligned, those layers
    repeated the seeds drawn here: the query tower's layers started as copies of the item
    tower's, and two workers trained from other initial weights than one process.
    Without a strategy the step runs in this thread and nothing changes. (Keras keeps the
    stream private; no public API moves it.)
    """
    generator = getattr(keras_backend._SEED_GENERATOR, "generator", None)  # noqa: SLF001
    if generator is not None:
        random.setstate(generator.getstate())
