"""Gradients and compiled functions, the one place the library branches on the backend.

Keras 3 has no backend-neutral ``grad`` or ``jit``. Everything differentiated here is written in
``keras.ops`` (one code path); this module only supplies, per backend, the transform that
``model.fit`` would otherwise hide: ``jax.value_and_grad`` + ``jax.jit``, ``tf.GradientTape``
inside ``tf.function``, and ``torch.autograd.grad`` in eager mode (torch.compile handles the
complex FFT poorly, and the eager step is already FFT-bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras


def _detach(tree: Any) -> Any:
    if isinstance(tree, tuple | list):
        return type(tree)(_detach(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _detach(v) for k, v in tree.items()}
    return tree.detach() if hasattr(tree, "detach") else tree


def value_and_grad(fn: Callable[..., tuple[Any, Any]], argnums: Sequence[int]) -> Callable:
    """Wrap ``fn(*args) -> (scalar, aux)`` as ``g(*args) -> ((scalar, aux), grads)``.

    ``grads`` is a tuple with the gradient of the scalar with respect to ``args[i]`` for each
    ``i`` in ``argnums`` (same shapes and dtypes). ``aux`` is returned as computed, outside the
    derivative. Usable inside a function given to :func:`compile_function`.
    """
    argnums = tuple(argnums)
    name = keras.backend.backend()
    if name == "jax":
        import jax

        return jax.value_and_grad(fn, argnums=argnums, has_aux=True)
    if name == "tensorflow":
        import tensorflow as tf

        def tf_value_and_grad(*args):
            with tf.GradientTape() as tape:
                for i in argnums:
                    tape.watch(args[i])
                value, aux = fn(*args)
            grads = tape.gradient(value, [args[i] for i in argnums])
            grads = [tf.zeros_like(args[i]) if g is None else tf.convert_to_tensor(g)
                     for i, g in zip(argnums, grads, strict=True)]
            return (value, aux), tuple(grads)

        return tf_value_and_grad
    if name == "torch":
        import torch

        def torch_value_and_grad(*args):
            xs = list(args)
            for i in argnums:
                xs[i] = xs[i].detach().requires_grad_(True)
            with torch.enable_grad():
                value, aux = fn(*xs)
                grads = torch.autograd.grad(value, [xs[i] for i in argnums], allow_unused=True)
            grads = tuple(torch.zeros_like(xs[i]) if g is None else g
                          for i, g in zip(argnums, grads, strict=True))
            return (value.detach(), _detach(aux)), grads

        return torch_value_and_grad
    raise RuntimeError(f"no gradient transform for backend {name!r}")


def compile_function(fn: Callable) -> Callable:
    """``fn`` compiled for the backend: ``jax.jit``, ``tf.function`` or (torch) ``no_grad`` eager.

    ``fn`` must take and return tensors (nested tuples allowed); Python values it closes over are
    constants of the compiled function. Under JAX and TensorFlow a new input shape compiles again.
    """
    name = keras.backend.backend()
    if name == "jax":
        import jax

        return jax.jit(fn)
    if name == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True, jit_compile=True)
    if name == "torch":
        import torch

        def no_grad_fn(*args):
            with torch.no_grad():
                return fn(*args)

        return no_grad_fn
    raise RuntimeError(f"no compiler for backend {name!r}")
