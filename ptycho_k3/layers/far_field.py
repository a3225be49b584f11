"""Far-field amplitude of exit waves."""

from __future__ import annotations

import keras

from ptycho_k3 import physics

from .physics_layer import PhysicsLayer


@keras.saving.register_keras_serializable(package="ptycho_k3")
class FarField(PhysicsLayer):
    """``call([re, im])`` ``(B, C, N, N)`` -> amplitude ``(B, N, N, C)`` channels-last,
    ``fftshift(|FFT2 Psi|) / N`` with DC at ``(N/2, N/2)`` (docs/conventions.md §8), the far
    field of ``physics.PtychoOperator``.
    """

    def call(self, inputs):
        re, im = inputs
        return physics.groups_to_channels(physics.PtychoOperator.amplitude(re, im))

    def compute_output_shape(self, input_shape):
        b, c, n, m = input_shape[0]
        return (b, n, m, c)
