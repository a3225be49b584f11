"""Combine decoded amplitude and phase into a complex patch stack."""

from __future__ import annotations

import keras
from keras import ops

from .physics_layer import PhysicsLayer


@keras.saving.register_keras_serializable(package="ptycho_k3")
class PolarToComplex(PhysicsLayer):
    """``call([amp, phase])`` ``(B, N, N, C')`` -> ``(re, im)`` ``(B, C', N, N)`` with
    ``O = A cos(phi) + i A sin(phi)``; with ``data_format='channels_first'`` the inputs are
    already ``(B, C', N, N)``.
    """

    def __init__(self, data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format

    def call(self, inputs):
        amp, phase = inputs
        if self.data_format == "channels_last":
            amp = ops.transpose(amp, (0, 3, 1, 2))
            phase = ops.transpose(phase, (0, 3, 1, 2))
        return amp * ops.cos(phase), amp * ops.sin(phase)

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        if self.data_format == "channels_last":
            b, n, m, c = shape
            shape = (b, c, n, m)
        return tuple(shape), tuple(shape)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}
