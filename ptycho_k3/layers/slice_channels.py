"""A channel range of channels-last features."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="ptycho_k3")
class SliceChannels(keras.layers.Layer):
    """Channels ``[start, stop)`` of ``(B, H, W, ch)`` (channels_last) or ``(B, ch, H, W)``."""

    def __init__(self, start: int, stop: int, data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        if not 0 <= start < stop:
            raise ValueError(f"SliceChannels: need 0 <= start < stop, got {start}, {stop}")
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"SliceChannels: unknown data_format {data_format!r}")
        self.start, self.stop, self.data_format = int(start), int(stop), data_format

    def call(self, x):
        if self.data_format == "channels_first":
            return x[:, self.start : self.stop]
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[1 if self.data_format == "channels_first" else -1] = self.stop - self.start
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop,
                "data_format": self.data_format}
