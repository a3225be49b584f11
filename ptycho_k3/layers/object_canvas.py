"""Per-group object canvas: decoded patches placed at their relative offsets."""

from __future__ import annotations

import keras

from ptycho_k3 import physics

from .border_mask import decoded_support
from .physics_layer import PhysicsLayer


@keras.saving.register_keras_serializable(package="ptycho_k3")
class ObjectCanvas(PhysicsLayer):
    """``call([re, im, offsets])`` -> ``(re, im)`` canvases ``(B, P, P)``, one per group.

    With ``object_big``: the ``C`` patches ``(B, C, N, N)`` are reassembled at their offsets
    ``(B, C, 2)`` and divided by the overlap count of the region the decoder fills
    (:func:`decoded_support`) plus ``eps`` — no border amplification, never merged across the
    batch. Without ``object_big``: the single patch ``(B, 1, N, N)`` is zero-padded (centred) to
    ``P' = N + 2 floor((P - N) / 2)`` and the offsets are not used here.
    """

    def __init__(self, n: int, size: int, object_big: bool = True, probe_big: bool = True,
                 pad_object: bool = True, eps: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.n, self.size = int(n), int(size)
        self.object_big, self.probe_big, self.pad_object = object_big, probe_big, pad_object
        self.eps = float(eps)
        self._support = decoded_support(self.n, probe_big, pad_object)

    @property
    def output_size(self) -> int:
        if self.object_big:
            return self.size
        return self.n + 2 * ((self.size - self.n) // 2)

    def call(self, inputs):
        re, im, offsets = inputs
        if not self.object_big:
            return (physics.pad_centre(re[:, 0], self.output_size),
                    physics.pad_centre(im[:, 0], self.output_size))
        return physics.reassemble_patches(
            re, im, offsets, self.size, support=self._support, normalize=True, eps=self.eps
        )

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0][0], self.output_size, self.output_size)
        return shape, shape

    def get_config(self):
        return {
            **super().get_config(),
            "n": self.n, "size": self.size, "object_big": self.object_big,
            "probe_big": self.probe_big, "pad_object": self.pad_object, "eps": self.eps,
        }
