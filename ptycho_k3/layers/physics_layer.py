"""Base class of the layers that wrap ``physics``: always float32."""

from __future__ import annotations

import keras


class PhysicsLayer(keras.layers.Layer):
    """A layer pinned to the float32 dtype policy.

    The convolution stack may run in ``mixed_bfloat16``; translations, FFTs, the probe and the
    intensity scale must not (bfloat16 keeps 8 mantissa bits: a 64 x 64 FFT or a 1e6-count
    Poisson NLL would be wrong in the third digit). Inputs are cast to float32 on entry.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
