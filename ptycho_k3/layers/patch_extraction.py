"""Cut each group's C patches back out of its canvas."""

from __future__ import annotations

import keras

from ptycho_k3 import physics

from .physics_layer import PhysicsLayer


@keras.saving.register_keras_serializable(package="ptycho_k3")
class PatchExtraction(PhysicsLayer):
    """``call([re, im, offsets])``: canvases ``(B, P, P)``, offsets ``(B, C, 2)`` ->
    ``(re, im)`` patches ``(B, C, N, N)`` = centre crop of the canvas translated by +offset.

    The extraction ``E`` of the forward operator, groups frame (``physics.PtychoOperator``).
    """

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = int(n)
        self._operator = physics.PtychoOperator(self.n, frame="groups")

    def call(self, inputs):
        re, im, offsets = inputs
        return self._operator.extract(re, im, offsets)

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0][0], input_shape[2][1], self.n, self.n)
        return shape, shape

    def get_config(self):
        return {**super().get_config(), "n": self.n}
