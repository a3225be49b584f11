"""Backend helpers for tests: NumPy conversion and gradients (the one place tests branch on it).

Keras 3 has no backend-neutral ``grad``; the library itself never needs one (``model.fit`` does
it), but tests of derivatives do, so this module dispatches on ``keras.backend.backend()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops


def backend() -> str:
    return keras.backend.backend()


def to_numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def complex_np(pair) -> np.ndarray:
    re, im = pair
    return to_numpy(re) + 1j * to_numpy(im)


def split(z: np.ndarray):
    """complex NumPy -> (re, im) float32 tensors."""
    z = np.asarray(z)
    return (
        ops.convert_to_tensor(np.ascontiguousarray(z.real, dtype=np.float32)),
        ops.convert_to_tensor(np.ascontiguousarray(z.imag, dtype=np.float32)),
    )


def tensor(x, dtype="float32"):
    return ops.convert_to_tensor(np.asarray(x, dtype=dtype))


def value_and_grad(fn: Callable, args: Sequence[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """Value of scalar ``fn(*args)`` and its gradient with respect to every argument.

    ``args`` are NumPy float32 arrays; the gradients come back as NumPy arrays of the same shapes.
    """
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(np.asarray(a, np.float32)) for a in args]
        with tf.GradientTape() as tape:
            for x in xs:
                tape.watch(x)
            y = fn(*xs)
        grads = tape.gradient(y, xs)
        return float(y.numpy()), [g.numpy() for g in grads]
    if name == "torch":
        import torch

        xs = [torch.tensor(np.asarray(a, np.float32), requires_grad=True) for a in args]
        y = fn(*xs)
        y.backward()
        return float(y.detach().cpu().numpy()), [x.grad.detach().cpu().numpy() for x in xs]
    if name == "jax":
        import jax

        xs = [np.asarray(a, np.float32) for a in args]
        y, grads = jax.value_and_grad(fn, argnums=tuple(range(len(xs))))(*xs)
        return float(y), [np.asarray(g) for g in grads]
    raise RuntimeError(f"no gradient helper for backend {name!r}")
