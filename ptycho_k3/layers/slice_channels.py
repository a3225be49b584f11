"""A channel range of channels-last features."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="ptycho_k3")
class SliceChannels(keras.layers.Layer):
    """Channels ``[start, stop)`` of a channels-last ``(..., ch)`` tensor."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= start < stop:
            raise ValueError(f"SliceChannels: need 0 <= start < stop, got {start}, {stop}")
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}
