"""One trainable log intensity scale, used to divide the input and multiply the output."""

from __future__ import annotations

import math

import keras
from keras import ops

from .physics_layer import PhysicsLayer


@keras.saving.register_keras_serializable(package="ptycho_k3")
class IntensityScale(PhysicsLayer):
    """Holds ``log_scale`` (one scalar Keras weight) and applies ``exp(log_scale)``.

    ``call(x, inverse=True)`` divides (input side: ``s X -> X``); ``inverse=False`` multiplies
    (output side: predicted amplitude -> sqrt(counts)). Calling this one layer at both ends shares
    the weight, so a trained scale acts on both. Trainable iff ``trainable`` (the config's
    ``intensity_scale_trainable``); the original's scale never trained (docs/legacy.md §7).

    Args:
        initial_scale: ``s`` (> 0), e.g. ``physics.intensity_scale(nphotons, N)``.
    """

    def __init__(self, initial_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not initial_scale > 0:
            raise ValueError(f"IntensityScale: initial_scale must be > 0, got {initial_scale}")
        self.initial_scale = float(initial_scale)
        self.log_scale = self.add_weight(
            name="log_scale",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_scale)),
            trainable=True,
            dtype="float32",
        )

    def call(self, x, inverse: bool = False):
        scale = ops.cast(ops.exp(self.log_scale), x.dtype)
        return x / scale if inverse else x * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial_scale": self.initial_scale}
