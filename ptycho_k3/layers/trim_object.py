"""The centre N x N of each group canvas, as a channels-last (re, im) tensor."""

from __future__ import annotations

import keras
from keras import ops

from ptycho_k3 import physics

from .physics_layer import PhysicsLayer


@keras.saving.register_keras_serializable(package="ptycho_k3")
class TrimObject(PhysicsLayer):
    """``call([re, im])`` canvases ``(B, P, P)`` -> float32 ``(B, N, N, 2)``: the centre crop
    (explicit start/stop, so P = N works), last axis ``[re, im]``. Complex64 ``(B, N, N, 1)`` is
    made from it only at the NumPy edge.
    """

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = int(n)

    def call(self, inputs):
        re, im = inputs
        return ops.stack([physics.centre_crop(re, self.n), physics.centre_crop(im, self.n)], -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.n, self.n, 2)

    def get_config(self):
        return {**super().get_config(), "n": self.n}
