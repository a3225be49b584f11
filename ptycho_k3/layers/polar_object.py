"""Combine decoded amplitude and phase into a complex patch stack."""

from __future__ import annotations

import keras
from keras import ops

from .physics_layer import PhysicsLayer


@keras.saving.register_keras_serializable(package="ptycho_k3")
class PolarToComplex(PhysicsLayer):
    """``call([amp, phase])`` channels-last ``(B, N, N, C')`` -> ``(re, im)`` ``(B, C', N, N)``
    with ``O = A cos(phi) + i A sin(phi)``.
    """

    def call(self, inputs):
        amp, phase = inputs
        amp = ops.transpose(amp, (0, 3, 1, 2))
        phase = ops.transpose(phase, (0, 3, 1, 2))
        return amp * ops.cos(phase), amp * ops.sin(phase)

    def compute_output_shape(self, input_shape):
        b, n, m, c = input_shape[0]
        return (b, c, n, m), (b, c, n, m)
