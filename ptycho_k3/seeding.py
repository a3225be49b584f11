"""Seeding every random source of a run: Python, NumPy, Keras and the active framework."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def set_random_seed(seed: int) -> None:
    """Seed Python, NumPy, Keras' global seed generator and the active framework.

    Same effect as ``keras.utils.set_random_seed`` for the active backend, except that under
    torch and JAX it does not import TensorFlow just to seed it (Keras does whenever TF is
    installed: ~170 MiB of resident memory and ~2 s, for a framework that is not in use).
    """
    import keras

    with _unimported_tensorflow_hidden(keras.backend.backend() != "tensorflow"):
        keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def _unimported_tensorflow_hidden(hide: bool) -> Iterator[None]:
    """While active, Keras' seeding sees TensorFlow as absent, if ``hide`` and TF is not
    imported yet (touching Keras' lazy handle's ``.available`` would import it)."""
    try:
        from keras.src.utils import module_utils, rng_utils
    except ImportError:  # Keras moved its internals: seed the documented way
        hide = False
    lazy_tf = getattr(rng_utils, "tf", None) if hide else None
    if lazy_tf is None or not isinstance(lazy_tf, module_utils.LazyModule) or lazy_tf.module is not None:
        yield
        return

    class _Absent:
        available = False

    rng_utils.tf = _Absent()
    try:
        yield
    finally:
        rng_utils.tf = lazy_tf
