"""Element-wise functions with a kink, with the same derivative at the kink on every backend.

Frameworks disagree about subgradients: at 0, ``d|x|/dx`` is 0 in TensorFlow and PyTorch but 1
in JAX, and ``d max(x, y)`` at a tie is 1, 1/2 and 1/2. Every one of them gives ``relu'(0) = 0``
(checked on Keras 3.15 with TensorFlow 2.21, torch 2.13, jax 0.10), so kinked functions written
with ``relu`` have one derivative everywhere. That matters here because kinks are common: the
bilinear "hat" weights of an integer offset sit exactly on theirs, and an L1 loss or total
variation meets ``|0|`` wherever prediction and target (or neighbours) are equal.
"""

from __future__ import annotations

from keras import ops


def absolute(x):
    """``|x|`` as ``relu(x) + relu(-x)``: derivative ``sign(x)``, and 0 at 0 on every backend."""
    return ops.relu(x) + ops.relu(-x)
